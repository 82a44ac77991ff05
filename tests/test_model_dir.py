"""MODEL_DIR as others read it: the documented format reproduces the scores with safetensors and torch
alone (README "MODEL_DIR format"), the safetensors header says what it holds, files are readable as the
umask allows, ``compress.export`` writes what ``compress export`` writes, and the card records the
command line (or the Python API) that made it."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from clihelp import invoke, listing
from safetensors import safe_open
from safetensors.torch import load_file

import compress
from compress.backbones.transformer import SequenceTransformer, Style

MODEL_FILES = {"config.json", "model.safetensors", "items.json", "card.json", "README.md"}


@pytest.fixture(scope="module")
def data(tiny_data_file):
    return compress.load_dataset(str(tiny_data_file))


def perturbed(data, arch: compress.ArchSpec, backbone: str = "sasrec", seed: int = 0):
    """A model whose every tensor (LayerNorm gains and biases included) is away from its initial value."""
    torch.manual_seed(seed)
    model = compress.get_backbone(backbone)(arch, data.n_items, 12)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model.eval()


def histories(data, n: int = 6) -> torch.Tensor:
    seqs, _ = data.eval_pairs("test")
    return compress.pad_right([s[-(2 + 3 * i):] for i, s in enumerate(seqs[:n])], 12)  # (n, N), right-padded


ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu}


def plain_scores(model_dir: Path, items: torch.Tensor) -> torch.Tensor:
    """The README's "MODEL_DIR format" for a next-item model (either norm placement, either attention
    kind, gates in either placement), written with json, safetensors and torch alone: item rows (B, N) ->
    scores (B, n_items + 1)."""
    cfg = json.loads((model_dir / "config.json").read_text())["model"]
    w = load_file(str(model_dir / "model.safetensors"))
    arch, style, eps = cfg["arch"], cfg["style"], cfg["layer_norm_eps"]
    d, heads, dh = arch["hidden"], arch["heads"], arch["head_dim"]
    act = ACTIVATIONS[style["activation"]]
    b, n = items.shape

    def lin(name, x):
        return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    def norm(name, x):
        return F.layer_norm(x, (d,), w[f"{name}.weight"], w[f"{name}.bias"], eps)

    valid = items > 0
    pos = torch.arange(n)
    seen = pos[:, None] >= pos if style["causal"] else torch.ones(n, n, dtype=torch.bool)  # (N, N): t sees j
    e = w["item_embedding.weight"][items] + w["position_embedding.weight"][:n]  # (B, N, d)
    e = norm("emb_norm", e) if style["embedding_norm"] else e

    def attention(p, x):
        q, k, v = (lin(f"{p}.attention.{t}", x).view(b, n, heads, dh).transpose(1, 2)
                   for t in ("query", "key", "value"))  # (B, h, N, d_h)
        if arch["attention"] == "softmax":
            allowed = (seen & valid[:, None, None, :]) | (pos[:, None] == pos)  # real keys it sees, and itself
            out = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(~allowed, float("-inf")).softmax(-1) @ v
        else:  # q̂ (k̂ᵀ v) over the keys each position sees, padded keys and values zeroed
            q, k = (F.elu(t) / (F.elu(t).norm(dim=-1, keepdim=True) + 1e-6) for t in (q, k))
            k, v = k * valid[:, None, :, None], v * valid[:, None, :, None]
            out = ((q @ k.transpose(-1, -2)) * seen) @ v / math.sqrt(dh)
        return lin(f"{p}.attention.out", out.transpose(1, 2).reshape(b, n, d))

    def gate(p, which):
        x = e
        for j in range(arch["gate_layers"] - 1):
            x = F.relu(lin(f"{p}.gates.{which}.hidden_layers.{j}", x))
        return 2 * torch.sigmoid(lin(f"{p}.gates.{which}.score", x))

    def ffn(p, h):
        if not arch["gate_layers"]:
            return lin(f"{p}.ffn_out", act(lin(f"{p}.ffn_in", h)))
        d1, d2 = gate(p, "first"), gate(p, "second")
        if arch["gate_placement"] == "code":
            return lin(f"{p}.ffn_out", act(d1 * lin(f"{p}.ffn_in", h))) * d2
        return lin(f"{p}.ffn_out", d2 * act(lin(f"{p}.ffn_in", d1 * h)))

    x = e
    for layer in range(arch["layers"]):
        p = f"layers.{layer}"
        if style["norm"] == "post":
            h = norm(f"{p}.attn_norm", x + attention(p, x))
            x = norm(f"{p}.ffn_norm", h + ffn(p, h))
        else:
            h = x + attention(p, norm(f"{p}.attn_norm", x))
            x = h + ffn(p, norm(f"{p}.ffn_norm", h))
    x = norm("final_norm", x) if style["final_norm"] else x
    last = valid.sum(1).clamp(min=1) - 1
    scores = x[torch.arange(b), last] @ w["item_embedding.weight"][:cfg["n_items"] + 1].T
    scores[:, 0] = float("-inf")  # column 0 is the padding row
    return scores


GPT = Style(causal=True, norm="pre", activation="gelu_tanh", embedding_norm=False, final_norm=True)


@pytest.mark.parametrize("arch, style", [
    (compress.ArchSpec(16, 32, 2, 2), None),
    (compress.ArchSpec(16, 32, 2, 2, attention="linear", gate_layers=2), None),
    (compress.ArchSpec(16, 32, 4, 1, gate_layers=3, gate_placement="paper"), Style(activation="relu")),
    (compress.ArchSpec(16, 32, 2, 2, attention="linear", gate_layers=1), GPT)], ids=str)
def test_the_documented_format_reproduces_predict_without_compress(data, tmp_path, arch, style):
    """Every next-item style the format names: either attention kind, gates in either placement, post- and
    pre-LN with a final norm, each activation. Bidirectional cloze models (where the mask token goes) are
    not scored here."""
    torch.manual_seed(0)
    model = SequenceTransformer(arch, data.n_items, 12, style=style)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    compress.export(model.eval(), str(tmp_path / "m"), dataset=data)
    items = histories(data)
    with torch.no_grad():
        want = model.predict(items)
    got = plain_scores(tmp_path / "m", items)
    assert got.shape == want.shape == (len(items), data.n_items + 1)
    assert torch.isinf(got[:, 0]).all() and (got[:, 1:] - want[:, 1:]).abs().max() < 1e-5
    ids = json.loads((tmp_path / "m" / "items.json").read_text())["item_ids"]
    assert ids == data.item_tokens  # column j is the item ids[j - 1]


def test_safetensors_metadata_says_what_the_file_holds(data, tmp_path):
    model = perturbed(data, compress.ArchSpec(16, 32, 2, 1, attention="linear", gate_layers=1))
    compress.export(model, str(tmp_path / "m"), dataset=data)
    with safe_open(str(tmp_path / "m" / "model.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["format"] == "pt" and meta["compress"] == compress.__version__
    assert json.loads(meta["arch"]) == model.arch.to_dict()
    assert (int(meta["n_items"]), int(meta["max_len"])) == (data.n_items, 12)


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_model_dir_is_readable_as_the_umask_allows(data, tmp_path, umask, file_mode, dir_mode):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=data.n_items + 1, n_positions=12, n_embd=16, n_layer=2, n_head=2)
    supernet = compress.wrap(transformers.GPT2Model(cfg), attention="softmax", gate_layers=0,
                             item_ids=data.item_tokens)
    small = supernet.slice(0, 0)
    old = os.umask(umask)
    try:
        compress.export(small, str(tmp_path / "m"), dataset=data, baseline=supernet)
    finally:
        os.umask(old)
    assert (tmp_path / "m" / "native").is_dir()
    for root, dirs, files in os.walk(tmp_path / "m"):
        assert oct(os.stat(root).st_mode & 0o777) == oct(dir_mode), root
        for f in files:
            assert oct(os.stat(os.path.join(root, f)).st_mode & 0o777) == oct(file_mode), f


def test_native_folder_stands_alone(data, tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=data.n_items + 1, n_positions=12, n_embd=16, n_layer=2, n_head=2)
    supernet = compress.wrap(transformers.GPT2Model(cfg), attention="softmax", gate_layers=0,
                             item_ids=data.item_tokens)
    card = compress.export(supernet.slice(0, 0), str(tmp_path / "m"), dataset=data, baseline=supernet)
    native = tmp_path / "m" / "native"
    assert {"README.md", "items.json", "config.json", "model.safetensors"} <= set(os.listdir(native))
    assert json.loads((native / "items.json").read_text())["item_ids"] == data.item_tokens
    readme = (native / "README.md").read_text()
    assert readme.startswith(f"# {compress.ArchSpec.from_dict(card['arch']).label()} as transformers.GPT2Model")
    assert readme.index("GPT2Model.from_pretrained") < readme.index("compress.load")  # its own class first
    assert card["input"]["params"] > card["params"] and card["input"]["label"] == "16/64 × 2 layers"


def test_export_from_python_writes_the_cli_formats(data, tmp_path):
    model = perturbed(data, compress.ArchSpec(16, 32, 2, 1))
    metrics = compress.split_metrics(model, data)
    card = compress.export(model, str(tmp_path / "ts"), format="torchscript", dataset=data, metrics=metrics)
    assert set(listing(tmp_path / "ts")) == MODEL_FILES | {"model.pt"}
    assert card["torchscript_max_abs_diff"] <= 1e-5 and card["metrics"] == metrics
    assert card["command"] is None and card["dataset"]["name"] == data.name
    readme = (tmp_path / "ts" / "README.md").read_text()
    assert "Python API" in readme and "| test / full |" in readme and "torch.jit.load" in readme
    with pytest.raises(compress.ConfigError, match="already exists"):
        compress.export(model, str(tmp_path / "ts"), dataset=data)
    card = compress.export(model, str(tmp_path / "ts"), dataset=data, overwrite=True)
    assert set(listing(tmp_path / "ts")) == MODEL_FILES


def test_export_refuses_data_of_another_numbering(data, tmp_path):
    model = perturbed(data, compress.ArchSpec(16, 32, 2, 1))
    with pytest.raises(compress.ConfigError, match="number their items differently"):
        compress.export(model, str(tmp_path / "m"), vocabulary=list(reversed(data.item_tokens)), dataset=data)
    assert not (tmp_path / "m").exists()


def test_onnx_export_at_fixed_length(data, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = perturbed(data, compress.ArchSpec(16, 32, 2, 1, attention="linear", gate_layers=1))
    card = compress.export(model, str(tmp_path / "m"), format="onnx", dataset=data)
    assert card["onnx_max_abs_diff"] <= 1e-5
    session = ort.InferenceSession(str(tmp_path / "m" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[1] == 12  # N is fixed; the batch is free
    items = histories(data, 5)
    got = torch.from_numpy(session.run(None, {"items": items.numpy()})[0])
    with torch.no_grad():
        assert (got[:, 1:] - model.predict(items)[:, 1:]).abs().max() <= 1e-5


def test_onnx_export_is_quiet(data, tmp_path, capfd, recwarn):
    pytest.importorskip("onnx")
    compress.export(perturbed(data, compress.ArchSpec(16, 32, 2, 1)), str(tmp_path / "m"), format="onnx",
                    dataset=data)
    out, err = capfd.readouterr()
    assert out == err == ""
    assert not [w for w in recwarn if "Tracer" in type(w.message).__name__ or "onnx" in str(w.message).lower()]


def test_the_card_records_the_command_line(data, tmp_path):
    compress.export(perturbed(data, compress.ArchSpec(16, 32, 2, 1)), str(tmp_path / "a"), dataset=data)
    result = invoke("export", tmp_path / "a", "--out", tmp_path / "b my model")
    assert result.exit_code == 0, result.stderr
    card = json.loads((tmp_path / "b my model" / "card.json").read_text())
    assert card["command"] == f"compress export {tmp_path / 'a'} --out '{tmp_path / 'b my model'}'"
    assert f"Made by `{card['command']}`" in (tmp_path / "b my model" / "README.md").read_text()
    assert compress.export(compress.load(str(tmp_path / "a")), str(tmp_path / "c"))["command"] is None
