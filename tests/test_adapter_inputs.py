"""What the adapters refuse, and how: every model, mapping or checkpoint they cannot read faithfully ends
in a typed error naming the part and the fix (never a torch error, never scores from a head that was
dropped), and a vocabulary grown by wrap(..., item_ids=...) exports natively at its grown size."""
from __future__ import annotations

import pathlib

import pytest
import torch
from test_adapters import HEADS, INNER, MAX_LEN, MY_MAPPING, N_ITEMS, D, MyRecommender, SASRec
from torch import nn

import compress
from compress.adapters import DeclaredAdapter
from compress.adapters.recbole import read_checkpoint
from compress.backbones.objectives import at, query
from compress.errors import CheckpointError, ConfigError

transformers = pytest.importorskip("transformers")


def bert_config(**changes) -> "transformers.BertConfig":
    return transformers.BertConfig(**{**dict(vocab_size=N_ITEMS + 2, hidden_size=D, num_hidden_layers=1,
                                             num_attention_heads=HEADS, intermediate_size=INNER,
                                             max_position_embeddings=MAX_LEN), **changes})


def gpt2_config(**changes) -> "transformers.GPT2Config":
    return transformers.GPT2Config(**{**dict(vocab_size=N_ITEMS + 1, n_embd=D, n_layer=1, n_head=HEADS, n_inner=INNER,
                                             n_positions=MAX_LEN, bos_token_id=None, eos_token_id=None), **changes})


# ---- Hugging Face: heads compress would drop, configs and weights it cannot read -------------------------------

@pytest.mark.parametrize("cls, config, inner", [
    ("BertForMaskedLM", bert_config, "model.bert"),
    ("BertForPreTraining", bert_config, "model.bert"),
    ("BertForSequenceClassification", bert_config, "model.bert"),
    ("GPT2DoubleHeadsModel", gpt2_config, "model.transformer"),
    ("GPT2ForSequenceClassification", gpt2_config, "model.transformer"),
])
def test_hf_models_with_their_own_head_are_refused(cls, config, inner):
    """Their scores come from a head (transform + bias, a classifier) that is not the item table."""
    with pytest.raises(ConfigError, match=rf"{cls} scores with its own head .*not the tied item embedding.*"
                                          rf"wrap the inner .*\({inner}\)"):
        compress.wrap(getattr(transformers, cls)(config()))


def test_an_untied_gpt2_lm_head_is_refused():
    model = transformers.GPT2LMHeadModel(gpt2_config(tie_word_embeddings=False))
    with pytest.raises(ConfigError, match=r"own head \(lm_head\.weight\).*model\.transformer"):
        compress.wrap(model)


def test_a_tied_gpt2_lm_head_is_what_compress_scores_with():
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(gpt2_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)).eval()
    sn = compress.wrap(model, attention="softmax", gate_layers=0)
    assert sn.adapter.name == "hf-gpt2"
    items = torch.tensor([[3, 5, 7, 9]])
    with torch.no_grad():
        got = sn.slice(0, 0).eval().predict(items)[0, 1:]
        want = model(input_ids=items).logits[0, -1, 1:N_ITEMS + 1]
    assert (got - want).abs().max() <= 1e-5


def test_bert_without_token_types_is_refused():
    with pytest.raises(ConfigError, match="type_vocab_size=0.*type_vocab_size >= 1"):
        compress.wrap(transformers.BertModel(bert_config(type_vocab_size=0)))


@pytest.mark.parametrize("build", [lambda: transformers.BertModel(bert_config()),
                                   lambda: transformers.GPT2Model(gpt2_config()), MyRecommender],
                         ids=["bert", "gpt2", "declared"])
def test_a_model_on_the_meta_device_is_refused(build):
    with torch.device("meta"):
        model = build()
    adapter = DeclaredAdapter(MY_MAPPING) if isinstance(model, MyRecommender) else None
    with pytest.raises(ConfigError, match="meta device.*materialize the weights first"):
        compress.wrap(model, adapter=adapter)


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_native_export_writes_the_grown_vocabulary(kind, tmp_path):
    """wrap(..., item_ids=...) with more ids than rows (data loaded with unknown_items="append") grows
    the item table; the native model must be written at that size, and score the new items alike."""
    torch.manual_seed(1)
    known = N_ITEMS - 3
    model = transformers.BertModel(bert_config(vocab_size=known + 2)) if kind == "bert" else \
        transformers.GPT2Model(gpt2_config(vocab_size=known + 1))
    sn = compress.wrap(model.eval(), item_ids=[f"i{k}" for k in range(N_ITEMS)], attention="softmax",
                       gate_layers=0, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
    dense = sn.slice(1, 0).eval()
    assert sn.adapter.native(dense, str(tmp_path)) == str(tmp_path)
    native = type(model).from_pretrained(str(tmp_path)).eval()
    assert native.get_input_embeddings().num_embeddings == dense.item_embedding.num_embeddings
    items = torch.tensor([[N_ITEMS, 2, N_ITEMS - 1, 4], [1, N_ITEMS - 2, 0, 0]])  # appended items among them
    inputs, index = query(dense, items)
    with torch.no_grad():
        want = at(dense(inputs), index)
        got = at(native(input_ids=inputs, attention_mask=(inputs > 0).long()).last_hidden_state, index)
    assert (got - want).abs().max() <= 1e-5


# ---- declared mappings: value types, then every module's kind and shape ----------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"dropout": "abc"}, r"dropout must be a finite number in \[0, 1\), got 'abc'"),
    ({"ffn_in": 3}, "ffn_in must be a module path.*got 3"),
    ({"final_norm": None}, "final_norm must be a module path.*got None"),
    ({"attention": {"qkv": "mix.qkv", "query": "mix.qkv", "output": "mix.proj"}}, "both qkv and query"),
    ({"attention": {"qkv": "mix.qkv", "output": "mix.proj", "proj": "x"}}, "attention has unknown key.*proj"),
    ({"attention": {"qkv": "mix.qkv", "output": ["mix.proj"]}}, "attention.output must be a module path"),
])
def test_declared_mapping_values_of_the_wrong_type_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        DeclaredAdapter({**MY_MAPPING, **change})


def test_a_declared_mapping_file_may_be_a_path(tmp_path):
    import yaml

    path = tmp_path / "mapping.yaml"
    path.write_text(yaml.safe_dump(MY_MAPPING))
    assert DeclaredAdapter(path).mapping == DeclaredAdapter(str(path)).mapping == MY_MAPPING
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="empty.yaml is empty"):
        DeclaredAdapter(pathlib.Path(tmp_path / "empty.yaml"))


def swapped(model: MyRecommender, **parts) -> MyRecommender:
    """``model`` with its modules at the given dotted paths replaced."""
    for path, module in parts.items():
        owner, _, name = path.replace("__", ".").rpartition(".")
        owner_module = model.get_submodule(owner) if owner else model
        owner_module._modules[name] = module
    return model


@pytest.mark.parametrize("mapping, parts, message", [
    ({"ffn_in": "down", "ffn_out": "up"}, {},
     rf"ffn_in at blocks\.0\.down is a Linear {INNER} -> {D}, expected {D} -> inner.*swapped"),
    ({"attention_norm": "up"}, {}, r"attention_norm at blocks\.0\.up is a Linear, expected an nn\.LayerNorm"),
    ({"item_embedding": "blocks.0.up"}, {}, r"item_embedding at blocks\.0\.up is a Linear, expected an nn\.Embedding"),
    ({}, {"blocks__1__up": nn.Linear(D, 48), "blocks__1__down": nn.Linear(48, D)},
     rf"ffn_in at blocks\.1\.up is a Linear {D} -> 48, expected {D} -> {INNER}.*inner size {INNER}.*per-layer"),
    ({}, {"blocks__0__mix__qkv": nn.Linear(D, 2 * D)},
     rf"attention\.qkv at blocks\.0\.mix\.qkv is a Linear {D} -> {2 * D}, expected {D} -> {3 * D} \(d -> 3d\)"),
    ({}, {"blocks__0__mix__proj": nn.Linear(D, 16)}, r"attention\.output at blocks\.0\.mix\.proj .* -> 16, expected"),
    ({}, {"blocks__0__ln_a": nn.LayerNorm(16, eps=1e-6)}, rf"attention_norm at blocks\.0\.ln_a normalizes over "
                                                          rf"\(16,\), expected \({D},\)"),
    ({}, {"head_norm": nn.LayerNorm(D, eps=1e-6, bias=False)}, "final_norm at head_norm is a LayerNorm without a "
                                                               "learned bias"),
    ({}, {"head_norm": nn.LayerNorm(D, eps=1e-6, elementwise_affine=False)},
     "final_norm at head_norm is a LayerNorm without a learned weight and bias"),
    ({}, {"head_norm": nn.RMSNorm(D)}, "final_norm at head_norm is a RMSNorm, expected an nn.LayerNorm"),
    ({}, {"head_norm": nn.LayerNorm(D)}, r"attention_norm at blocks\.0\.ln_a has eps 1e-06, another mapped LayerNorm "
                                         "1e-05; compress uses one eps"),
    ({}, {"where": nn.Embedding(MAX_LEN, 16)}, rf"position_embedding at where is 16 wide, expected {D}"),
])
def test_declared_modules_of_the_wrong_kind_or_shape_are_named(mapping, parts, message):
    model = swapped(MyRecommender(), **parts)
    with pytest.raises(ConfigError, match="declared mapping: " + message):
        compress.wrap(model, adapter=DeclaredAdapter({**MY_MAPPING, **mapping}))


# ---- RecBole checkpoints: config and state must agree --------------------------------------------------------

class Config:
    """Stands for RecBole's pickled Config (read back as a stub holding its attributes)."""

    def __init__(self, final: dict) -> None:
        self.final_config_dict = final


GOOD = {"model": "SASRec", "hidden_size": 8, "inner_size": 16, "n_layers": 1, "n_heads": 2, "hidden_dropout_prob": 0.1,
        "attn_dropout_prob": 0.1, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "MAX_ITEM_LIST_LENGTH": MAX_LEN}


def state(layers: int = 1, **changes) -> dict:
    return {**SASRec(hidden=8, inner=16, layers=layers, heads=2).state_dict(), **changes}


@pytest.mark.parametrize("config, weights, message", [
    ({"hidden_act": None}, {}, "final_config_dict lacks hidden_act"),
    ({"n_heads": None}, {}, "final_config_dict lacks n_heads"),
    ({"hidden_size": 16}, {}, r"item_embedding\.weight has shape \(41, 8\), but .*hidden_size=16.* imply \(41, 16\)"),
    ({"inner_size": 32}, {}, r"feed_forward\.dense_1\.weight has shape \(16, 8\), but .*inner_size=32"),
    ({"hidden_dropout_prob": "x"}, {}, "final_config_dict hidden_dropout_prob must be a finite number"),
    ({"hidden_act": "swish"}, {}, "hidden_act 'swish' is not supported"),
    ({"n_heads": 3}, {}, "not divisible into 3 heads"),
    ({}, {"layers": 2}, r"state_dict has trm_encoder\.layer\.1\..*n_layers=1 does not"),
    ({"n_layers": 2}, {}, r"state_dict lacks trm_encoder\.layer\.1\..*n_layers=2 has"),
    ({}, {"item_embedding.weight": torch.zeros(N_ITEMS + 1, 8, 1)}, r"item_embedding\.weight is a 3-D tensor"),
    ({}, {"LayerNorm.bias": [0.0] * 8}, r"LayerNorm\.bias is a list, not a tensor"),
])
def test_a_recbole_checkpoint_that_disagrees_with_itself_is_named(config, weights, message, tmp_path):
    settings = {k: v for k, v in {**GOOD, **config}.items() if v is not None}
    layers = weights.pop("layers", 1)
    path = tmp_path / "SASRec-bad.pth"
    torch.save({"config": Config(settings), "state_dict": state(layers, **weights)}, path)
    with pytest.raises(CheckpointError, match=rf"SASRec-bad\.pth: .*{message}"):
        read_checkpoint(str(path))


def test_a_consistent_recbole_checkpoint_reads(tmp_path):
    path = tmp_path / "SASRec-good.pth"
    torch.save({"config": Config(GOOD), "state_dict": state()}, path)
    model, adapter = read_checkpoint(str(path))
    assert (model.arch.hidden, model.arch.inner, model.arch.layers, model.n_items) == (8, 16, 1, N_ITEMS)
