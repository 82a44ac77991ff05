"""The bad inputs of the probe harness (tests/test_probes.py), generated from what the command line
takes: every option of every command with values outside its type or range, hostile paths and
outputs, broken data files, tampered model directories and run directories in odd states.

A probe is a command line and what it must end in: ``error`` (exit 2, one ``error:`` line, no
traceback), or ``ok``. Arguments are templates: ``{tmp}`` is the probe's own directory, ``{data}``
the tiny data file, ``{model}``/``{run}``/``{baseline}`` copies of a MODEL_DIR, a retrained search
RUN_DIR and a train RUN_DIR, ``{file}`` a file the probe's ``files`` wrote.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

from compress.app.options import OPTIONS, Option

TINY = ["--epochs", "1", "--hidden", "16", "--inner", "32", "--layers", "1", "--heads", "1", "--seq-len", "10",
        "--batch-size", "64", "--device", "cpu"]
SEARCH = ["--search-epochs", "1", "--retrain-epochs", "1", "--hidden", "16", "--inner", "32", "--layers", "2",
          "--heads", "2", "--seq-len", "10", "--search-batch-size", "64", "--hidden-ratios", "0,0.5",
          "--inner-ratios", "0,0.5", "--device", "cpu", "--stage", "search"]
BASE = {"train": ["train", "--data", "{data}", *TINY, "--out", "{tmp}/out"],
        "search": ["search", "--data", "{data}", *SEARCH, "--out", "{tmp}/out"],
        "retrain": ["retrain", "{run}", "--overwrite"],
        "evaluate": ["evaluate", "{model}"],
        "bench": ["bench", "{model}", "--repeats", "1"]}


@dataclass
class Probe:
    name: str
    argv: List[str]
    expect: str = "error"  # or "ok"
    words: str = ""  # a fragment the error line must hold
    files: Dict[str, bytes] = field(default_factory=dict)  # relative path under {tmp} -> content
    prepare: Optional[Callable[[Dict[str, str]], None]] = None  # changes the copies before the run


def _bad_values(opt: Option) -> List[str]:
    """Values outside the option's type or range, as a user would type them."""
    common = ["", "nan", "\x1b[31mred"]
    by_kind = {"int": ["-1", "1.5", "2**70", str(2 ** 70), "0x10"], "float": ["-1e9", "1e9", "1,5"],
               "choice": ["bogus", "0"], "name": ["0", "no/such"], "bool": [], "budget": ["-5%", "0", "half"],
               "device": ["tpu", "cuda:x", "gpu0"], "floats": ["0,1.5", "[", "0,,a", "-1"],
               "ints": ["0", "-3", "1,,x", "1.5"], "choices": ["bogus", "softmax,,x", "[]"], "str": []}
    out = []
    for value in common + by_kind[opt.kind]:
        try:
            opt.parse(value, opt.key)
        except Exception:  # noqa: BLE001 - the schema's own errors; the CLI must end in one line all the same
            out.append(value)
    return out


def option_probes() -> List[Probe]:
    """Every option of the run commands (through the first command that takes it), with the values
    its schema refuses; and the numeric ones with infinities and overflows too."""
    probes = []
    for opt in OPTIONS:
        command = next((c for c in BASE if c in opt.commands), None)
        if command is None or opt.kind in ("bool", "str"):
            continue
        extra = ["inf", "-inf", "1e999"] if opt.kind in ("float", "budget") else []
        for value in dict.fromkeys(_bad_values(opt) + [v for v in extra if v not in _bad_values(opt)]):
            try:
                opt.parse(value, opt.key)
                continue  # a value it takes is no bad input
            except Exception:  # noqa: BLE001
                probes.append(Probe(f"{command} {opt.flag(command)} {value[:12]!r}",
                                    [*BASE[command], opt.flag(command), value]))
    return probes


def path_probes() -> List[Probe]:
    """Paths where a data file, a model or an output is expected."""
    p = []
    for flag in ("--data", "--recipe", "--init"):
        cmd = "search" if flag == "--init" else "train"
        for name, value in (("missing", "{tmp}/nope.csv"), ("directory", "{tmp}"), ("/dev/zero", "/dev/zero"),
                            ("/dev/null", "/dev/null"), ("empty", "{tmp}/empty.csv"), ("binary", "{tmp}/binary.bin")):
            valid = flag == "--recipe" and name == "empty"  # an empty recipe sets nothing
            words = "regular file" if name.startswith("/dev") and flag != "--init" else ""
            p.append(Probe(f"{cmd} {flag} {name}", [*BASE[cmd], flag, value], "ok" if valid else "error", words,
                           files={"empty.csv": b"", "binary.bin": bytes(range(256)) * 8}))
    for cmd in ("evaluate", "recommend", "flops", "inspect", "export", "retrain", "bench"):
        extra = {"recommend": ["--history", "1"], "export": ["--out", "{tmp}/m"]}.get(cmd, [])
        for name, value in (("missing", "{tmp}/nope"), ("a file", "{tmp}/f.txt"), ("an empty directory", "{tmp}/d"),
                            ("a data file", "{data}"), ("/dev/zero", "/dev/zero")):
            p.append(Probe(f"{cmd} of {name}", [cmd, value, *extra], files={"f.txt": b"x", "d/.keep": b""}))
    return p


def output_probes() -> List[Probe]:
    """Outputs compress must not write or replace."""
    p = [Probe("train --out . --overwrite", [*BASE["train"], "--out", ".", "--overwrite"], words="working directory"),
         Probe("train --out / --overwrite", [*BASE["train"], "--out", "/", "--overwrite"]),
         Probe("train --out a user directory --overwrite", [*BASE["train"], "--out", "{tmp}/mine", "--overwrite"],
               words="not written by compress", files={"mine/notes.txt": b"keep me"}),
         Probe("train --out a file --overwrite", [*BASE["train"], "--out", "{tmp}/f.txt", "--overwrite"],
               words="not a directory", files={"f.txt": b"keep me"}),
         Probe("train --out the data file", [*BASE["train"], "--data", "{tmp}/d.tsv", "--out", "{tmp}/d.tsv",
                                             "--overwrite"], files={"d.tsv": b"u\ti\t1\n"}),
         Probe("train --out the data's folder", [*BASE["train"], "--data", "{tmp}/in/d.tsv", "--out", "{tmp}/in",
                                                 "--overwrite"], words="input", files={"in/d.tsv": b"u\ti\t1\n"}),
         Probe("export onto its own run", ["export", "{run}", "--out", "{run}", "--overwrite"], words="input"),
         Probe("export into its own run", ["export", "{run}", "--out", "{run}/inside"], words="input"),
         Probe("export onto the run's parent", ["export", "{run}", "--out", "{runs}", "--overwrite"], words="input"),
         Probe("train onto an existing run without --overwrite", [*BASE["train"], "--out", "{baseline}"],
               words="already exists"),
         Probe("search --resume with nothing to resume", ["search", "--resume", "{tmp}/none"], words="nothing to resume"),
         Probe("train --resume with other options", ["train", "--resume", "{tmp}/none", "--epochs", "2"], words="drop --epochs"),
         Probe("train --resume of a search run", ["train", "--resume", "{tmp}/r"], words="not a 'train' run",
               files={"r.partial/run.json": b'{"kind": "search", "settings": {}}',
                      "r.partial/checkpoint/state.json": b"{}"}),
         Probe("retrain of a train run", ["retrain", "{baseline}"], words="no finished search"),
         Probe("search --stage bogus", [*BASE["search"], "--stage", "bogus"]),
         Probe("search --stage retrain without --out", ["search", "--stage", "retrain"]),
         Probe("export --format bogus", ["export", "{run}", "--out", "{tmp}/m", "--format", "bogus"]),
         Probe("export of a search without retrained/", ["export", "{tmp}/s", "--out", "{tmp}/m"],
               files={"s/config.json": b'{"kind": "search"}'}, words="retrain"),
         Probe("recommend --k 0", ["recommend", "{model}", "--history", "1", "--k", "0"]),
         Probe("recommend --k -5", ["recommend", "{model}", "--history", "1", "--k", "-5"]),
         Probe("inspect --plot of a model dir", ["inspect", "{model}", "--plot"]),
         Probe("an unknown command", ["frobnicate"]),
         Probe("an unknown flag", [*BASE["train"], "--hiden", "8"]),
         Probe("--set without =", [*BASE["train"], "--set", "epochs"]),
         Probe("--set an unknown key", [*BASE["train"], "--set", "epochz=3"]),
         Probe("--set kcore=1000", [*BASE["train"], "--set", "kcore=1000"], words="removed every interaction"),
         Probe("hidden not divisible into heads", [*BASE["train"], "--hidden", "30", "--heads", "4"]),
         Probe("an impossible FLOPs budget", [*BASE["search"], "--max-flops", "1"], words="smallest candidate"),
         Probe("fp16 on the CPU", [*BASE["train"], "--precision", "fp16"], words="CUDA"),
         Probe("cuda:7 on this machine", [*BASE["train"], "--device", "cuda:7"]),
         Probe("an unknown backbone", [*BASE["train"], "--backbone", "gru4rec"]),
         Probe("a recipe that is not a mapping", [*BASE["train"], "--recipe", "{tmp}/r.yaml"],
               files={"r.yaml": b"- 1\n- 2\n"}),
         Probe("a recipe with python tags", [*BASE["train"], "--recipe", "{tmp}/r.yaml"],
               files={"r.yaml": b"!!python/object/apply:os.system ['true']\n"}),
         Probe("a huge recipe", [*BASE["train"], "--recipe", "{tmp}/r.yaml"], files={"r.yaml": b"#" * (2 << 20)})]
    return p


def _rows(n_users: int = 30, n_items: int = 12, length: int = 6) -> List[Tuple[str, str, int]]:
    return [(f"u{u}", f"i{(u + j) % n_items}", 1000 + j) for u in range(n_users) for j in range(length)]


def _tsv(rows, header: str = "user_id\titem_id\ttimestamp") -> bytes:
    return ("\n".join([header] + ["\t".join(map(str, r)) for r in rows]) + "\n").encode()


def data_probes() -> List[Probe]:
    """Data files with something wrong, read by `compress train --data`."""
    good = _tsv(_rows())
    bad: Dict[str, Tuple[bytes, str]] = {
        "header only": (b"user_id\titem_id\ttimestamp\n", "no rows"),
        "one column": (b"a\nb\nc\n", "one column"),
        "NUL bytes": (good[:40] + b"\x00\x00" + good[40:], "NUL"),
        "a NaN timestamp": (_tsv(_rows()[:5] + [("u1", "i1", "nan")] + _rows()[5:]), "finite"),
        "an inf timestamp": (_tsv([("u1", "i1", "inf")] + _rows()), "finite"),
        "a text timestamp": (_tsv(_rows()[:3] + [("u1", "i1", "noon")]), "timestamp"),
        "unknown header names": (_tsv(_rows(), "who\twhat\twhen"), "header"),
        "too few fields": (_tsv(_rows()) + b"u1\n", "fields"),
        "cut gzip": (gzip.compress(good)[:60], "corrupt"),
        "not gzip but .gz": (b"\x1f\x8bnot really gzip", "corrupt"),
        "users of 2 interactions": (_tsv(_rows(length=2)), "3 or more"),
        "a 2 MB line": (b"u1\ti1\t" + b"9" * (2 << 20) + b"\n", "longer than"),
        "only whitespace": (b"   \n\t\n  \n", "empty"),
        "latin-1 bytes": (b"user_id\titem_id\ttimestamp\n" + b"\xff\xfe\t\xe9\t1\n" * 3, ""),
    }
    probes = [Probe(f"data: {name}", [*BASE["train"], "--data", "{tmp}/" + ("d.gz" if "gz" in name else "d.tsv")],
                    words=words, files={"d.gz" if "gz" in name else "d.tsv": content})
              for name, (content, words) in bad.items()]
    probes.append(Probe("data: a 200,000-character id is its bytes, not a blow-up",
                        [*BASE["train"], "--data", "{tmp}/d.tsv"], "ok",
                        files={"d.tsv": _tsv(_rows() + [("u1", "x" * 200_000, 2000)])}))
    probes.append(Probe("data: --user-col names no column", [*BASE["train"], "--data", "{data}", "--user-col", "who"],
                        words="no user column"))
    probes.append(Probe("data: --user-col 9 of 3", [*BASE["train"], "--data", "{data}", "--user-col", "9"]))
    probes.append(Probe("data: --sep that splits nothing", [*BASE["train"], "--data", "{data}", "--sep", ";"]))
    probes.append(Probe("data: --data-format sequence of a TSV", [*BASE["train"], "--data", "{data}",
                                                                   "--data-format", "ml-dat"]))
    return probes


def _json_edit(rel: str, change: Callable[[dict], None], root: str = "model") -> Callable[[Dict[str, str]], None]:
    def edit(paths: Dict[str, str]) -> None:
        path = f"{paths[root]}/{rel}"
        with open(path) as fh:
            obj = json.load(fh)
        change(obj)
        with open(path, "w") as fh:
            json.dump(obj, fh)
    return edit


def _write(rel: str, content: bytes) -> Callable[[Dict[str, str]], None]:
    def edit(paths: Dict[str, str]) -> None:
        with open(f"{paths['model']}/{rel}", "wb") as fh:
            fh.write(content)
    return edit


def _remove(rel: str) -> Callable[[Dict[str, str]], None]:
    def edit(paths: Dict[str, str]) -> None:
        import os

        os.remove(f"{paths['model']}/{rel}")
    return edit


def _tensors(change: Callable[[dict], None]) -> Callable[[Dict[str, str]], None]:
    def edit(paths: Dict[str, str]) -> None:
        from safetensors.torch import load_file, save_file

        path = f"{paths['model']}/model.safetensors"
        state = load_file(path)
        change(state)
        save_file(state, path)
    return edit


def _set(section: Optional[str], key: str, value) -> Callable[[dict], None]:
    def change(cfg: dict) -> None:
        (cfg[section] if section else cfg)[key] = value
    return change


def artifact_probes() -> List[Probe]:
    """A MODEL_DIR tampered with, then evaluated, served, measured and exported."""
    import torch

    edits = {
        "truncated weights": _write("model.safetensors", b"\x00" * 10),
        "weights of another shape": _tensors(lambda s: s.update({"position_embedding.weight":
                                                                 s["position_embedding.weight"][:3].contiguous()})),
        "an extra tensor": _tensors(lambda s: s.update({"extra": torch.zeros(2)})),
        "a missing tensor": _tensors(lambda s: s.pop("position_embedding.weight")),
        "int64 weights": _tensors(lambda s: s.update({k: v.long() for k, v in s.items()})),
        "NaN weights": _tensors(lambda s: s.update({k: v * float("nan") for k, v in s.items()})),
        "config: 10**12 items": _json_edit("config.json", lambda c: c["model"].update(n_items=10 ** 12)),
        "config: 10**9 layers": _json_edit("config.json", lambda c: c["model"]["arch"].update(layers=10 ** 9)),
        "config: negative N": _json_edit("config.json", lambda c: c["model"].update(max_len=-5)),
        "config: unknown backbone": _json_edit("config.json", lambda c: c["model"].update(backbone="x")),
        "config: text for a number": _json_edit("config.json", lambda c: c["model"].update(dropout="lots")),
        "config: not JSON": _write("config.json", b"{not json"),
        "config: a list": _write("config.json", b"[1, 2]"),
        "config: NaN": _write("config.json", b'{"model": NaN}'),
        "config: names /etc/passwd as its data": _json_edit("config.json", _set(None, "data", {"data": "/etc/passwd"})),
        "config: names a FIFO as its data": _json_edit("config.json", _set(None, "data", {"data": "/dev/stdin"})),
        "items.json missing": _remove("items.json"),
        "items.json: too few ids": _json_edit("items.json", lambda i: i.update(item_ids=i["item_ids"][:3])),
        "items.json: duplicate ids": _json_edit("items.json", lambda i: i["item_ids"].__setitem__(1, i["item_ids"][0])),
        "items.json: numbers for ids": _json_edit("items.json", lambda i: i.update(item_ids=list(range(len(i["item_ids"]))))),
        "items.json: NaN popularity": _write("items.json", b'{"item_ids": ["a"], "popularity": [NaN, 1]}'),
    }
    probes = []
    for name, edit in edits.items():
        for cmd in ("evaluate", "recommend", "flops", "export"):
            argv = {"evaluate": ["evaluate", "{model}"], "recommend": ["recommend", "{model}", "--history", "1,2"],
                    "flops": ["flops", "{model}"], "export": ["export", "{model}", "--out", "{tmp}/again"]}[cmd]
            expect = "ok" if (name == "NaN weights" and cmd in ("flops", "evaluate")) or \
                (name.endswith("as its data") and cmd != "evaluate") else "error"
            words = "cannot be read" if name.endswith("as its data") and cmd == "evaluate" else ""
            probes.append(Probe(f"{cmd} of a model with {name}", argv, expect, words, prepare=edit))
    escape = _json_edit("items.json", lambda i: i["item_ids"].__setitem__(0, "\x1b]0;pwned\x07\x1b[2J"))
    probes.append(Probe("recommend prints no terminal escapes", ["recommend", "{model}", "--history", "x"], "ok",
                        prepare=escape))
    return probes


def inspect_probes() -> List[Probe]:
    """A run's and a model's JSON artifacts edited by hand, or written by another version, then inspected;
    a search card's decision likewise, then retrained and exported."""
    edits = {
        "a search card without τ": ("run", "search_card.json", lambda c: [r.pop("tau") for r in c["history"]]),
        "a search card with text for FLOPs": ("run", "search_card.json", lambda c: c["decision"].update(flops="x")),
        "a search card with a number for its history": ("run", "search_card.json", lambda c: c.update(history=5)),
        "a search card with zero full FLOPs": ("run", "search_card.json", lambda c: c.update(full_flops=0)),
        "a search card with a list for its decision": ("run", "search_card.json", lambda c: c.update(decision=[])),
        "metrics.json without metrics": ("run", "retrained/metrics.json", lambda m: m.pop("metrics")),
        "a model card without params": ("model", "card.json", lambda c: c.pop("params")),
    }
    probes = []
    for name, (root, rel, change) in edits.items():
        for extra in ([], ["--plot"]) if root == "run" else ([],):
            probes.append(Probe(f"inspect {' '.join(extra)} of {name}".replace("  ", " "),
                                ["inspect", "{" + root + "}", *extra], prepare=_json_edit(rel, change, root)))
    probes.append(Probe("inspect of empty metrics", ["inspect", "{run}"], "ok",
                        prepare=_json_edit("retrained/metrics.json", lambda m: m.update(metrics={}), "run")))
    decisions = {"no decision": lambda c: c.pop("decision"),
                 "a number for its decision": lambda c: c.update(decision=5),
                 "a width choice that is not there": lambda c: c["decision"].update(width=99),
                 "a bool for its depth choice": lambda c: c["decision"].update(depth=True),
                 "no seconds": lambda c: c.pop("seconds")}
    for name, change in decisions.items():
        probes.append(Probe(f"retrain of a search card with {name}",
                            ["retrain", "{run}", "--epochs", "1", "--overwrite"],
                            prepare=_json_edit("search_card.json", change, "run")))
        if name != "a width choice that is not there":  # export takes the retrained model, and records the card
            probes.append(Probe(f"export of a search card with {name}", ["export", "{run}", "--out", "{tmp}/m"],
                                prepare=_json_edit("search_card.json", change, "run")))
    return probes


def all_probes() -> List[Probe]:
    return option_probes() + path_probes() + output_probes() + data_probes() + artifact_probes() + inspect_probes()
