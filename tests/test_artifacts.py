"""Artifacts: config.json + model.safetensors round trips, strict loading, atomic directories."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from clihelp import listing
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from synthetic import walking_dataset

import compress
from compress.arch import ArchSpec
from compress.errors import CheckpointError, ConfigError
from compress.files import atomic_dir, write_json
from compress.layout import CONFIG, WEIGHTS
from compress.runtime.devices import as_device, resolve_device
from compress.store.artifacts import load, save_model

N_ITEMS, MAX_LEN = 50, 20


def tiny_sasrec(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return compress.get_backbone("sasrec")(ArchSpec(hidden=16, inner=32, heads=2, layers=1), N_ITEMS, MAX_LEN, 0.2)


def histories() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    items = torch.randint(1, N_ITEMS + 1, (6, MAX_LEN), generator=gen)
    for row, length in enumerate([1, 3, 7, 12, 19, 20]):
        items[row, length:] = 0  # right-padded
    return items


@pytest.fixture
def saved(tmp_path):
    model = tiny_sasrec().eval()
    out = tmp_path / "model"
    with atomic_dir(str(out)) as tmp:
        save_model(model, tmp, {"kind": "test"})
    return model, out


def test_round_trip_identical_predictions(saved):
    model, out = saved
    assert sorted(listing(out)) == [CONFIG, WEIGHTS]
    back = compress.load(str(out))
    assert type(back) is type(model) and not back.training
    assert back.config() == model.config()
    with torch.no_grad():
        assert torch.equal(back.predict(histories()), model.predict(histories()))
    cfg = json.loads((out / CONFIG).read_text())
    assert cfg["model"]["backbone"] == "sasrec" and cfg["kind"] == "test"
    assert cfg["model"]["arch"]["hidden"] == 16 and cfg["model"]["n_items"] == N_ITEMS


def test_load_in_a_fresh_process(saved, tmp_path, subprocess_env):
    model, out = saved
    with torch.no_grad():
        expected = model.predict(histories())
    save_file({"items": histories(), "expected": expected.contiguous()}, str(tmp_path / "io.safetensors"))
    code = (
        "import sys, torch, compress\n"
        "from safetensors.torch import load_file\n"
        "io = load_file(sys.argv[2])\n"
        "m = compress.load(sys.argv[1])\n"
        "with torch.no_grad():\n"
        "    got = m.predict(io['items'])\n"
        "assert torch.equal(got, io['expected']), (got - io['expected']).abs().max()\n"
        "print('ok', type(m).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "io.safetensors")],
                          capture_output=True, text=True, env=subprocess_env, cwd=str(tmp_path), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok SASRec"


def test_weights_are_plain_tensors(saved):
    _, out = saved
    state = load_file(str(out / WEIGHTS))
    assert all(isinstance(t, torch.Tensor) for t in state.values())
    assert state["item_embedding.weight"].shape == (N_ITEMS + 1, 16)


def upcast(model: torch.nn.Module) -> torch.nn.Module:
    """A float32 copy of the low-precision ``model``'s weights (bfloat16 and float16 upcast exactly)."""
    dense = tiny_sasrec().eval()
    dense.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    return dense


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_save_model_writes_float32(tmp_path, dtype):
    """A model held in bfloat16 or float16 (a lighter serving copy, or a run's model) is written as the float32
    the format holds, which compress.load takes back: its scores are those of the weights upcast."""
    model = tiny_sasrec().eval().to(dtype)
    with atomic_dir(str(tmp_path / "model")) as tmp:
        save_model(model, tmp, {"kind": "test"})
    assert {t.dtype for t in load_file(str(tmp_path / "model" / WEIGHTS)).values()} == {torch.float32}
    with torch.no_grad():
        assert torch.equal(load(str(tmp_path / "model")).predict(histories()), upcast(model).predict(histories()))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_a_bfloat16_model_is_exported_in_float32(tmp_path):
    """compress.export of a bfloat16 model: compress.load takes MODEL_DIR back, and its TorchScript file (checked
    against the model before the directory appears) holds the same float32 model, not a bfloat16 one."""
    model = tiny_sasrec().eval().to(torch.bfloat16)
    out = tmp_path / "model"
    compress.export(model, str(out), format="torchscript", vocabulary=[f"i{i}" for i in range(1, N_ITEMS + 1)])
    assert next(model.parameters()).dtype == torch.bfloat16  # export works on a copy
    traced = torch.jit.load(str(out / "model.pt"))
    assert {p.dtype for p in traced.parameters()} == {torch.float32}
    with torch.no_grad():
        expected = upcast(model).predict(histories())  # (6, N_ITEMS + 1)
        assert torch.equal(compress.load(str(out)).predict(histories()), expected)
        assert torch.equal(traced(histories()), expected)


# ---------------------------------------------------------------- broken artifacts


@pytest.mark.parametrize("damage", [
    lambda b: os.urandom(200),  # garbage
    lambda b: b"",  # empty
    lambda b: b[: len(b) // 2],  # truncated
])
def test_corrupt_weights(saved, damage):
    _, out = saved
    blob = (out / WEIGHTS).read_bytes()
    (out / WEIGHTS).write_bytes(damage(blob))
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load(str(out))


def test_tensor_shape_changed_vs_config(saved):
    _, out = saved
    state = load_file(str(out / WEIGHTS))
    state["item_embedding.weight"] = torch.zeros(N_ITEMS + 5, 16)
    save_file(state, str(out / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"item_embedding\.weight has shape \(55, 16\).*\(51, 16\)"):
        load(str(out))


def test_config_changed_vs_tensors(saved):
    _, out = saved
    cfg = json.loads((out / CONFIG).read_text())
    cfg["model"]["arch"]["inner"] = 64
    write_json(str(out / CONFIG), cfg)
    with pytest.raises(CheckpointError, match="config.json implies"):
        load(str(out))


@pytest.mark.parametrize("section, key, value, words", [
    ("arch", "heads", 4, "heads 4 (the weights: 2)"), ("arch", "attention", "linear", "attention 'linear'"),
    ("style", "norm", "pre", "norm 'pre' (the weights: 'post')")])
def test_an_edit_that_keeps_every_shape_is_refused(saved, section, key, value, words):
    """More heads of a narrower width, the other attention kind, the norms elsewhere: every tensor keeps
    its shape, so the model loaded and scored differently (the top 3 changed) without a word. The
    weights' header says what they hold."""
    _, out = saved
    cfg = json.loads((out / CONFIG).read_text())
    assert cfg["model"]["arch"]["heads"] == 2 and cfg["model"]["style"]["norm"] == "post"
    cfg["model"][section][key] = value
    if key == "heads":
        cfg["model"]["arch"]["head_dim"] = cfg["model"]["arch"]["hidden"] // value
    write_json(str(out / CONFIG), cfg)
    holds = f"config.json's model {section} is not what .* holds: .*{re.escape(words)}"
    with pytest.raises(CheckpointError, match=holds):
        load(str(out))


@pytest.mark.parametrize("key", ["arch", "style"])
def test_damaged_header_metadata_is_refused(saved, key):
    """A flipped byte inside the header's JSON metadata (the tensors intact) is a damaged file, named as
    such: it was a raw JSONDecodeError."""
    _, out = saved
    with safe_open(str(out / WEIGHTS), "pt") as fh:
        meta = fh.metadata()
    meta[key] = meta[key][:-1]  # the closing brace lost
    save_file(load_file(str(out / WEIGHTS)), str(out / WEIGHTS), metadata=meta)
    with pytest.raises(CheckpointError, match="header metadata is not valid JSON .*damaged: export the model again"):
        load(str(out))


def test_renamed_or_extra_tensor(saved):
    _, out = saved
    state = load_file(str(out / WEIGHTS))
    state["renamed.weight"] = state.pop("emb_norm.weight")
    save_file(state, str(out / WEIGHTS))
    with pytest.raises(CheckpointError, match=r"missing \['emb_norm\.weight'\], unexpected \['renamed\.weight'\]"):
        load(str(out))


@pytest.mark.parametrize("text,match", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "not a JSON object"),
    ('{"format_version": 1}', "model.backbone"),
    ('{"model": {"backbone": "sasrec", "arch": {"hidden": 16}}}', "incomplete"),
])
def test_broken_config(saved, text, match):
    _, out = saved
    (out / CONFIG).write_text(text)
    with pytest.raises(CheckpointError, match=match):
        load(str(out))


def test_unknown_backbone_in_config(saved):
    _, out = saved
    cfg = json.loads((out / CONFIG).read_text())
    cfg["model"]["backbone"] = "bert4rec-xl"
    write_json(str(out / CONFIG), cfg)
    with pytest.raises(ConfigError, match="unknown backbone 'bert4rec-xl'; available: .*sasrec"):
        load(str(out))


def test_missing_files(saved, tmp_path):
    _, out = saved
    with pytest.raises(CheckpointError, match="not a directory"):
        load(str(tmp_path / "nothing"))
    os.remove(out / WEIGHTS)
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        load(str(out))
    os.remove(out / CONFIG)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        load(str(out))


def test_load_takes_what_device_takes(saved):
    """``auto`` (the CLI's and the suite's default) is the GPU when there is one, else the CPU; a device
    that does not exist is a one-line ConfigError, not torch's list of every device type."""
    model, out = saved
    auto = resolve_device("auto")
    assert next(compress.load(str(out), "auto").parameters()).device.type == auto.type
    assert next(compress.load(str(out), torch.device("cpu")).parameters()).device.type == "cpu"
    for bad in ("gpu", "cuda:99"):
        with pytest.raises(ConfigError, match="device"):
            compress.load(str(out), bad)


def test_a_torch_device_is_checked_as_its_string_is(saved, monkeypatch):
    """fit, evaluate, search and load given a torch.device the CLI would refuse as a string (mps where there is
    none, meta, a CUDA device this machine lacks) raise the string's one-line ConfigError before any work, where
    torch's own raw error (or, for load onto meta, a model without weights) came before; the CPU runs."""
    _, out = saved
    monkeypatch.setattr(torch.mps, "is_available", lambda: False, raising=False)  # a machine without MPS
    data = walking_dataset(n_users=30, n_items=N_ITEMS)
    model = tiny_sasrec()
    calls = {
        "fit": lambda device: compress.fit(model, data, compress.TrainConfig(epochs=1), device),
        "evaluate": lambda device: compress.evaluate(model, data, "valid", "full", device=device),
        "search": lambda device: compress.search(compress.wrap(tiny_sasrec()), data, compress.SearchConfig(epochs=1),
                                                 device),
        "load": lambda device: compress.load(str(out), device),
    }
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    refused = {torch.device("mps"): "unknown `device` 'mps'", torch.device("meta"): "unknown `device` 'meta'",
               torch.device("cuda", count): f"`device` cuda:{count} asked for, but {count} CUDA device"}
    if count == 0:
        refused[torch.device("cuda")] = "`device` cuda asked for, but 0 CUDA device"
    for name, call in calls.items():
        for device, words in refused.items():
            with pytest.raises(ConfigError, match=re.escape(words)) as info:
                call(device)
            assert "\n" not in str(info.value), (name, device)
        call(torch.device("cpu", 0))  # the CPU by any index
    # a machine with two GPUs, imitated: their devices are taken as they are, a third refused
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    for device in (torch.device("cuda"), torch.device("cuda", 1), "cuda:1"):
        assert as_device(device, torch.device("cpu")) == torch.device(device)
    with pytest.raises(ConfigError, match="`device` cuda:2 asked for, but 2 CUDA device"):
        as_device(torch.device("cuda", 2), torch.device("cpu"))
    # and a Mac with MPS, which no string names: its one device is taken as it is, another refused
    monkeypatch.setattr(torch.mps, "is_available", lambda: True, raising=False)
    monkeypatch.setattr(torch.mps, "device_count", lambda: 1, raising=False)
    assert as_device(torch.device("mps"), torch.device("cpu")) == torch.device("mps")
    with pytest.raises(ConfigError, match="unknown `device` 'mps:1'"):
        as_device(torch.device("mps", 1), torch.device("cpu"))


def test_unknown_backbone_name():
    with pytest.raises(ConfigError, match="unknown backbone 'gru4rec'"):
        compress.get_backbone("gru4rec")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown `device` 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ConfigError, match="unknown `device` 'cuda:x'"):
        resolve_device("cuda:x")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ConfigError, match=f"`device` cuda:{count} asked for, but {count} CUDA device"):
        resolve_device(f"cuda:{count}")
    if count == 0:
        with pytest.raises(ConfigError, match="0 CUDA device"):
            resolve_device("cuda")


# ---------------------------------------------------------------- atomic directories


def leftovers(parent) -> list:
    return [n for n in os.listdir(parent) if n.startswith(".")]


def test_atomic_dir_leaves_nothing_when_the_body_raises(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_dir(str(out)) as tmp:
            Path(tmp, "half.txt").write_text("partial")
            raise RuntimeError("boom")
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_atomic_dir_keeps_the_old_output_when_an_overwrite_fails(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(str(out)) as tmp:
        Path(tmp, "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(str(out), overwrite=True) as tmp:
            Path(tmp, "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert listing(out) == ["old.txt"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_refuses_and_overwrites(tmp_path):
    out = tmp_path / "run"
    with atomic_dir(str(out)) as tmp:
        Path(tmp, "a.txt").write_text("a")
    assert listing(out) == ["a.txt"]
    with pytest.raises(ConfigError, match="already exists; pass `overwrite`"):
        with atomic_dir(str(out)):
            pytest.fail("the body must not run")
    with atomic_dir(str(out), overwrite=True) as tmp:
        Path(tmp, "b.txt").write_text("b")
    assert listing(out) == ["b.txt"]
    assert leftovers(tmp_path) == []


def test_atomic_dir_output_has_ordinary_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        out = tmp_path / "shared-model"
        with atomic_dir(str(out)):
            pass
        assert oct(out.stat().st_mode & 0o777) == oct(0o755)  # not mkdtemp's private 0o700
    finally:
        os.umask(umask)


def test_atomic_dir_creates_missing_parents(tmp_path):
    out = tmp_path / "a" / "b" / "model"
    with atomic_dir(str(out)) as tmp:
        Path(tmp, "x").write_text("x")
    assert (out / "x").read_text() == "x"


def test_versions_name_the_source_commit(monkeypatch, tmp_path):
    """Artifacts record the git commit of the code that wrote them when it runs from a checkout."""
    from compress.store.provenance import source_commit, versions

    repo = Path(compress.__file__).resolve().parents[1]
    head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode:
        pytest.skip("not a git checkout")
    source_commit.cache_clear()
    assert versions()["commit"].split("+")[0] == head.stdout.strip()
    installed = tmp_path / "site-packages" / "compress" / "__init__.py"  # an installed copy: no commit
    installed.parent.mkdir(parents=True)
    monkeypatch.setattr(compress, "__file__", str(installed))
    source_commit.cache_clear()
    assert "commit" not in versions()
    source_commit.cache_clear()
