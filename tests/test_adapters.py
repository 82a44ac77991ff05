"""Every registered adapter passes one suite (timm's discipline): wrapping keeps the model's scores,
slicing is exact for every candidate, importance reordering keeps scores, and search → export →
load gives the same scores; plus Hugging Face round trips and the errors users meet first."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import compress
from compress.adapters import DeclaredAdapter, list_adapters
from compress.arch import ArchSpec
from compress.backbones.objectives import at, query
from compress.backbones.transformer import SequenceTransformer
from compress.data import Interactions, build_dataset
from compress.errors import ConfigError
from compress.nas.controllers import one_hot

transformers = pytest.importorskip("transformers")

N_ITEMS, MAX_LEN, D, INNER, HEADS, LAYERS = 40, 12, 32, 64, 4, 2
SPACE = compress.SearchSpace((0.0, 0.5), (0.0, 0.5))


@pytest.fixture(scope="module")
def dataset():
    """150 users stepping through exactly N_ITEMS items, so every model's vocabulary fits."""
    rng = np.random.default_rng(1)
    users, items, order = [], [], []
    for u in range(150):
        start = int(rng.integers(0, N_ITEMS))
        for j in range(int(rng.integers(6, 16))):
            users.append(f"u{u}")
            items.append(f"i{(start + j) % N_ITEMS}")
            order.append(float(j))
    ds = build_dataset(Interactions(np.array(users), np.array(items), np.array(order), True, "synthetic"))
    assert ds.n_items == N_ITEMS
    return ds


def perturbed(model: nn.Module, seed: int) -> nn.Module:
    """Random non-trivial weights everywhere (biases and norms too), so nothing hides behind zeros and ones."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


class Block(nn.Module):
    """A user's own pre-LN layer: packed qkv, its own names."""

    def __init__(self) -> None:
        super().__init__()
        self.ln_a, self.ln_b = nn.LayerNorm(D, eps=1e-6), nn.LayerNorm(D, eps=1e-6)
        self.mix = nn.ModuleDict({"qkv": nn.Linear(D, 3 * D), "proj": nn.Linear(D, D)})
        self.up, self.down = nn.Linear(D, INNER), nn.Linear(INNER, D)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, HEADS, D // HEADS).transpose(1, 2) for t in self.mix["qkv"](self.ln_a(x)).chunk(3, -1))
        mask = torch.ones(n, n, dtype=torch.bool).tril() & ~pad[:, None, None, :] | torch.eye(n, dtype=torch.bool)
        a = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.mix["proj"](a.transpose(1, 2).reshape(b, n, D))
        return x + self.down(torch.relu(self.up(self.ln_b(x))))


class MyRecommender(nn.Module):
    """What a user brings: a causal pre-LN recommender written from scratch, tied scoring head."""

    def __init__(self) -> None:
        super().__init__()
        self.items, self.where = nn.Embedding(N_ITEMS + 1, D, padding_idx=0), nn.Embedding(MAX_LEN, D)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.head_norm = nn.LayerNorm(D, eps=1e-6)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x = self.items(items) + self.where(torch.arange(items.shape[1]))
        for block in self.blocks:
            x = block(x, items == 0)
        return self.head_norm(x)


class RecBoleLayer(nn.Module):
    """RecBole's TransformerLayer, same names and arithmetic (additive -10000 mask, post-LN)."""

    def __init__(self, hidden: int, inner: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.multi_head_attention = nn.Module()
        for name in ("query", "key", "value", "dense"):
            self.multi_head_attention.add_module(name, nn.Linear(hidden, hidden))
        self.multi_head_attention.add_module("LayerNorm", nn.LayerNorm(hidden, eps=1e-12))
        self.feed_forward = nn.Module()
        self.feed_forward.add_module("dense_1", nn.Linear(hidden, inner))
        self.feed_forward.add_module("dense_2", nn.Linear(inner, hidden))
        self.feed_forward.add_module("LayerNorm", nn.LayerNorm(hidden, eps=1e-12))

    def forward(self, x: torch.Tensor, additive_mask: torch.Tensor) -> torch.Tensor:
        att, ffn = self.multi_head_attention, self.feed_forward
        b, n, d = x.shape
        dh = d // self.heads
        q, k, v = (getattr(att, p)(x).view(b, n, self.heads, dh).transpose(1, 2) for p in ("query", "key", "value"))
        probs = torch.softmax(q @ k.transpose(-1, -2) / dh ** 0.5 + additive_mask, -1)
        h = att.LayerNorm(att.dense((probs @ v).transpose(1, 2).reshape(b, n, d)) + x)
        return ffn.LayerNorm(ffn.dense_2(nn.functional.gelu(ffn.dense_1(h))) + h)


class SASRec(nn.Module):
    """A stand-in with RecBole SASRec's attributes, module names and forward (RecBole is not installed here)."""

    def __init__(self, hidden: int = D, inner: int = INNER, layers: int = LAYERS, heads: int = HEADS) -> None:
        super().__init__()
        self.n_layers, self.n_heads, self.hidden_size, self.inner_size = layers, heads, hidden, inner
        self.hidden_dropout_prob = self.attn_dropout_prob = 0.0
        self.hidden_act, self.layer_norm_eps, self.max_seq_length = "gelu", 1e-12, MAX_LEN
        self.item_embedding = nn.Embedding(N_ITEMS + 1, hidden, padding_idx=0)
        self.position_embedding = nn.Embedding(MAX_LEN, hidden)
        self.trm_encoder = nn.Module()
        self.trm_encoder.add_module("layer", nn.ModuleList(RecBoleLayer(hidden, inner, heads) for _ in range(layers)))
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        x = self.LayerNorm(self.item_embedding(items) + self.position_embedding(torch.arange(items.shape[1])))
        n = items.shape[1]
        see = torch.ones(n, n, dtype=torch.bool).tril() & (items > 0)[:, None, None, :]
        mask = (~see).float() * -10000.0  # RecBole's extended attention mask
        for layer in self.trm_encoder.layer:
            x = layer(x, mask)
        return x


MY_MAPPING = {"item_embedding": "items", "position_embedding": "where", "layers": "blocks",
              "attention": {"qkv": "mix.qkv", "output": "mix.proj"}, "ffn_in": "up", "ffn_out": "down",
              "attention_norm": "ln_a", "ffn_norm": "ln_b", "final_norm": "head_norm", "heads": HEADS,
              "norm": "pre", "causal": True, "activation": "relu", "objective": "next", "dropout": 0.0}


def hidden_of(model: nn.Module, items: torch.Tensor) -> torch.Tensor:
    """The user's model run its own way (HF with an attention mask): (B, N, d)."""
    if isinstance(model, (MyRecommender, SequenceTransformer, SASRec)):
        return model(items)
    return model(input_ids=items, attention_mask=(items > 0).long()).last_hidden_state


def item_table(model: nn.Module) -> torch.Tensor:
    """The user's item embedding, which their tied head scores with."""
    if isinstance(model, MyRecommender):
        return model.items.weight
    if isinstance(model, (SequenceTransformer, SASRec)):
        return model.item_embedding.weight
    return model.get_input_embeddings().weight


def make(kind: str, seed: int = 0):
    """(the user's model, the adapter to give wrap: None where it is found automatically)."""
    torch.manual_seed(seed)
    arch = ArchSpec(hidden=D, inner=INNER, heads=HEADS, layers=LAYERS)
    if kind in ("sasrec", "bert4rec"):
        model = compress.get_backbone(kind)(arch, N_ITEMS, MAX_LEN, dropout=0.0)
        return perturbed(model, seed), None
    if kind == "hf-bert":
        cfg = transformers.BertConfig(vocab_size=N_ITEMS + 2, hidden_size=D, num_hidden_layers=LAYERS,
                                      num_attention_heads=HEADS, intermediate_size=INNER,
                                      max_position_embeddings=MAX_LEN, hidden_dropout_prob=0.0,
                                      attention_probs_dropout_prob=0.0)
        return perturbed(transformers.BertModel(cfg), seed), None
    if kind == "hf-gpt2":
        cfg = transformers.GPT2Config(vocab_size=N_ITEMS + 1, n_embd=D, n_layer=LAYERS, n_head=HEADS, n_inner=INNER,
                                      n_positions=MAX_LEN, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                      bos_token_id=None, eos_token_id=None)
        return perturbed(transformers.GPT2Model(cfg), seed), None
    if kind == "recbole-sasrec":
        return perturbed(SASRec(), seed), None
    return perturbed(MyRecommender(), seed), DeclaredAdapter(MY_MAPPING)


KINDS = ("sasrec", "bert4rec", "hf-bert", "hf-gpt2", "recbole-sasrec", "declared")


def test_every_registered_adapter_is_in_the_suite():
    assert set(list_adapters()) == {"builtin", "declared", "hf-bert", "hf-gpt2", "recbole-sasrec"}


def items_batch(seed: int = 3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    items = torch.randint(1, N_ITEMS + 1, (4, MAX_LEN), generator=gen)
    items[1, 5:] = 0
    items[2, 1:] = 0
    return items


def reference_scores(model: nn.Module, supernet: compress.Supernet, items: torch.Tensor) -> torch.Tensor:
    """Scores computed by the user's own model: hidden state at the query position × its item table."""
    inputs, index = query(supernet, items)  # the cloze query puts the mask token after the history
    with torch.no_grad():
        h = at(hidden_of(model, inputs), index)  # (B, d)
    return h @ item_table(model)[:N_ITEMS + 1].T


@pytest.mark.parametrize("kind", KINDS)
def test_wrapping_keeps_the_models_scores(kind):
    model, adapter = make(kind)
    sn = compress.wrap(model, adapter=adapter, space=SPACE, attention="softmax", gate_layers=0).eval()
    items = items_batch()
    with torch.no_grad():
        got = sn.predict(items, one_hot(0, 2), one_hot(LAYERS - 1, LAYERS))
    want = reference_scores(model, sn, items)
    assert (got[:, 1:] - want[:, 1:]).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attention", ["softmax", "linear"])
def test_slicing_is_exact_for_every_candidate(kind, attention):
    model, adapter = make(kind, seed=1)
    sn = compress.wrap(model, adapter=adapter, space=SPACE, attention=attention, gate_layers=2).eval()
    items = items_batch(4)
    for k in range(len(sn.widths)):
        for depth in range(LAYERS):
            dense = sn.slice(k, depth).eval()
            assert dense.arch.hidden == sn.widths[k].hidden and dense.arch.layers == depth + 1
            with torch.no_grad():
                gap = (sn.predict(items, one_hot(k, 2), one_hot(depth, LAYERS)) - dense.predict(items))[:, 1:]
            assert gap.abs().max() <= 1e-5, (k, depth)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("criterion", ["magnitude", "taylor"])
def test_importance_reordering_keeps_scores_and_the_users_model(kind, criterion, dataset):
    model, adapter = make(kind, seed=2)
    before = {n: p.clone() for n, p in model.state_dict().items()}
    plain = compress.wrap(model, adapter=adapter, space=SPACE, attention="softmax", gate_layers=0).eval()
    batch = None
    if criterion == "taylor":
        from compress.app.jobs import importance_batch
        batch = importance_batch(plain.backbone, dataset, 32, 0)
    sn = compress.wrap(model, adapter=adapter, space=SPACE, attention="softmax", gate_layers=0,
                       reorder=criterion, reorder_batch=batch).eval()
    items = items_batch(5)
    full = (one_hot(0, 2), one_hot(LAYERS - 1, LAYERS))
    with torch.no_grad():
        assert (sn.predict(items, *full) - plain.predict(items, *full))[:, 1:].abs().max() <= 1e-5
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())  # the user's model is untouched
    pairs = zip(sn.backbone.state_dict().values(), plain.backbone.state_dict().values())
    moved = [not torch.equal(a, b) for a, b in pairs]
    assert any(moved)


@pytest.mark.parametrize("kind", KINDS)
def test_search_export_load_gives_the_same_scores(kind, dataset, tmp_path):
    model, adapter = make(kind, seed=3)
    sn = compress.wrap(model, adapter=adapter, space=SPACE)
    result = compress.search(sn, dataset, compress.SearchConfig(epochs=1, batch_size=64, seed=0), device="cpu")
    small = result.export(str(tmp_path / "m"), dataset).eval()
    loaded = compress.load(str(tmp_path / "m"))
    items = items_batch(6)
    with torch.no_grad():
        assert torch.equal(loaded.predict(items), small.predict(items))
    for name, t in loaded.state_dict().items():  # physically the decided shape
        assert t.shape == result.slice().state_dict()[name].shape
    card = json.loads((tmp_path / "m" / "card.json").read_text())  # the cost comparison compress export makes
    assert card["input"]["arch"] == sn.input_arch.to_dict() and card["input"]["flops"]["total"] == sn.input_flops
    assert card["search"]["budget"] == result.budget()


@pytest.mark.parametrize("kind", ["hf-bert", "hf-gpt2"])
def test_hf_decision_exports_as_the_users_class(kind, dataset, tmp_path):
    model, _ = make(kind, seed=4)
    sn = compress.wrap(model, space=SPACE, attention="softmax", gate_layers=0)
    result = compress.search(sn, dataset, compress.SearchConfig(epochs=1, batch_size=64, seed=0, max_flops="60%"),
                             device="cpu")
    small = result.export(str(tmp_path / "m"), dataset).eval()
    card = compress.files.read_json(str(tmp_path / "m" / "card.json"))
    assert card["native"]["path"] == "native"
    native = getattr(transformers, type(model).__name__).from_pretrained(str(tmp_path / "m" / "native")).eval()
    size = native.config.hidden_size if kind == "hf-bert" else native.config.n_embd
    assert size == small.arch.hidden < D
    items = items_batch(7)
    inputs, index = query(small, items)
    with torch.no_grad():
        want = at(small(inputs), index)
        got = at(native(input_ids=inputs, attention_mask=(inputs > 0).long()).last_hidden_state, index)
    assert (got - want).abs().max() <= 1e-5
    with pytest.raises(compress.CheckpointError, match="is a Hugging Face config .* from_pretrained"):
        compress.load(str(tmp_path / "m" / "native"))  # not "the artifact is corrupt"


def test_hf_decision_with_linear_attention_says_why_there_is_no_native_export(dataset, tmp_path):
    model, _ = make("hf-gpt2", seed=5)
    result = compress.search(compress.wrap(model, space=SPACE), dataset,
                             compress.SearchConfig(epochs=1, batch_size=64, seed=0), device="cpu")
    result.export(str(tmp_path / "m"), dataset)
    card = compress.files.read_json(str(tmp_path / "m" / "card.json"))
    assert card["native"]["path"] is None and "linear attention" in card["native"]["note"]
    assert not (tmp_path / "m" / "native").exists()


def test_a_model_no_adapter_fits_points_at_the_declared_adapter():
    with pytest.raises(ConfigError, match="declared adapter"):
        compress.wrap(nn.Linear(3, 3))


def test_a_declared_path_that_is_missing_is_named():
    mapping = {**MY_MAPPING, "ffn_out": "mlp.fc2"}
    with pytest.raises(ConfigError, match=r"no FFN output projection found at blocks\.0\.mlp\.fc2"):
        compress.wrap(MyRecommender(), adapter=DeclaredAdapter(mapping))


def test_declared_mapping_errors_name_the_keys(tmp_path):
    with pytest.raises(ConfigError, match="unknown key.*attn.*missing key.*attention"):
        DeclaredAdapter({k: v for k, v in {**MY_MAPPING, "attn": 1}.items() if k != "attention"})
    with pytest.raises(ConfigError, match="query/key/value or qkv"):
        DeclaredAdapter({**MY_MAPPING, "attention": {"output": "mix.proj"}})
    path = tmp_path / "m.yaml"
    path.write_text("items: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        DeclaredAdapter(str(path))
    with pytest.raises(ConfigError, match="needs a mapping"):
        compress.wrap(MyRecommender(), adapter="declared")


def test_declared_mapping_reads_from_yaml(tmp_path):
    import yaml

    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(MY_MAPPING))
    model, _ = make("declared", seed=6)
    a = compress.wrap(model, adapter=DeclaredAdapter(str(path)), space=SPACE, attention="softmax", gate_layers=0)
    b = compress.wrap(model, adapter=DeclaredAdapter(MY_MAPPING), space=SPACE, attention="softmax", gate_layers=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_hf_options_we_do_not_compute_are_refused():
    cfg = transformers.BertConfig(vocab_size=N_ITEMS + 2, hidden_size=D, num_hidden_layers=1, num_attention_heads=HEADS,
                                  intermediate_size=INNER, max_position_embeddings=MAX_LEN, is_decoder=True)
    with pytest.raises(ConfigError, match="is_decoder=True"):
        compress.wrap(transformers.BertModel(cfg))


def test_a_saved_supernet_keeps_its_adapter(tmp_path):
    model, _ = make("hf-gpt2", seed=7)
    sn = compress.wrap(model, space=SPACE)
    compress.save_supernet(sn, str(tmp_path / "s"))
    back = compress.load_supernet(str(tmp_path / "s"))
    assert back.adapter.name == "hf-gpt2" and back.adapter.hf_config == sn.adapter.hf_config


def test_recbole_decision_goes_back_as_a_recbole_state_dict(dataset, tmp_path):
    import yaml
    from safetensors.torch import load_file

    model, _ = make("recbole-sasrec", seed=8)
    sn = compress.wrap(model, space=SPACE, attention="softmax", gate_layers=0)
    assert sn.adapter.name == "recbole-sasrec"
    result = compress.search(sn, dataset, compress.SearchConfig(epochs=1, batch_size=64, seed=0, max_flops="60%"),
                             device="cpu")
    small = result.export(str(tmp_path / "m"), dataset).eval()
    cfg = yaml.safe_load((tmp_path / "m" / "native" / "config.yaml").read_text())
    assert (cfg["hidden_size"], cfg["inner_size"], cfg["n_layers"], cfg["n_heads"]) == \
        (small.arch.hidden, small.arch.inner, small.arch.layers, small.arch.heads)
    back = SASRec(cfg["hidden_size"], cfg["inner_size"], cfg["n_layers"], cfg["n_heads"]).eval()
    back.load_state_dict(load_file(str(tmp_path / "m" / "native" / "model.safetensors")))  # strict: names and shapes
    items = items_batch(9)
    real = items > 0
    with torch.no_grad():
        assert (back(items) - small(items))[real].abs().max() <= 1e-5

