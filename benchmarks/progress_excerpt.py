"""The README's "What you see while it runs" excerpt, produced by running what it shows:

    python benchmarks/progress_excerpt.py              # writes README.md's <!-- excerpt:progress --> block
    python benchmarks/progress_excerpt.py --print      # prints the block instead

It runs a tiny `compress search` (the tiny recipe on the embedded default data, 2 search epochs and
1 retraining epoch, on the CPU) in a subprocess at a fixed width (COLUMNS=100), exports the model,
and quotes the header, the first epoch's summary with its p and q bars, the retraining stage's
announcement, the head of metrics.csv and the head of the model card. Throughputs and timings vary
from run to run; everything else is what the command prints. Bad input ends in a one-line
`error: ...` and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from typing import List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from compress.errors import CompressError, ConfigError  # noqa: E402
from compress.layout import CARD, METRICS_CSV  # noqa: E402
from compress.suite.blocks import fill_block  # noqa: E402

SEARCH = ["search", "--recipe", os.path.join(REPO, "recipes", "tiny.yaml"), "--search-epochs", "2",
          "--retrain-epochs", "1", "--device", "cpu", "--out", "runs/tiny"]
SHOWN = "compress search --recipe recipes/tiny.yaml --search-epochs 2 --retrain-epochs 1 --device cpu --out runs/tiny"
MODEL_README = "README.md"  # the model card a MODEL_DIR carries, when this version writes one


def compress(args: List[str], cwd: str) -> str:
    """Run ``compress ARGS`` in ``cwd`` at 100 columns; its stderr (the live view)."""
    env = {**os.environ, "COLUMNS": "100", "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get(
        "PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "compress", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"`compress {args[0]}` failed: {last}")
    return done.stderr


def sections(live: str) -> dict:
    """The header (up to the first epoch), the first epoch with its bars, and the retraining announcement."""
    lines = [line.rstrip() for line in live.splitlines()]
    first = next(i for i, line in enumerate(lines) if line.startswith("epoch "))
    second = next(i for i, line in enumerate(lines) if i > first and line.startswith("epoch "))
    retrain = next(line for line in lines if line.startswith("retraining the decision"))
    return {"header": "\n".join(lines[:first]).strip("\n"), "epoch": "\n".join(lines[first:second]).strip("\n"),
            "retrain": retrain}


def card_head(model_dir: str, section: str = "## Accuracy") -> str:
    """The model card up to the end of its ``section``'s table (whole tables only: a table cut after a row
    reads as if it ended there), or the decision in card.json where no card is written."""
    readme = os.path.join(model_dir, MODEL_README)
    if os.path.exists(readme):
        with open(readme, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        start = lines.index(section)
        table = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
        end = next((i for i in range(table, len(lines)) if not lines[i].startswith("|")), len(lines))
        return "\n".join(lines[:end]).rstrip()
    with open(os.path.join(model_dir, CARD), encoding="utf-8") as fh:
        return json.dumps({"search": {"decision": json.load(fh)["search"]["decision"]}}, indent=2)


def excerpt() -> str:
    with tempfile.TemporaryDirectory() as work:
        live = compress(SEARCH, work)
        compress(["export", "runs/tiny", "--out", "models/tiny"], work)
        with open(os.path.join(work, "runs", "tiny", METRICS_CSV), encoding="utf-8") as fh:
            csv_head = "".join(fh.readlines()[:3]).rstrip()
        card = card_head(os.path.join(work, "models", "tiny"))
    shown = sections(live)
    card_kind = "README.md" if not card.startswith("{") else "card.json (its decision)"
    return "\n".join([
        f"Written by `python benchmarks/progress_excerpt.py` from `{SHOWN}` (100 columns; throughputs "
        "and timings vary). Before the first step, the run says what it is about to do:", "",
        "```text", shown["header"], "```", "",
        "While an epoch runs, a bar shows its steps, loss, sequences/s, elapsed time and ETA, then "
        "\"validating on N users…\"; each epoch leaves one line and the controllers' weights as bars:", "",
        "```text", shown["epoch"], "```", "",
        f"The retraining stage announces itself: `{shown['retrain']}`. Every run directory holds "
        f"`{METRICS_CSV}`, one row per epoch (lists spread over columns: `p0`, `p1`, …; first lines):", "",
        "```text", csv_head, "```", "",
        f"and `compress export runs/tiny --out models/tiny` writes the model's {card_kind}:", "",
        "````" + ("markdown" if card_kind == "README.md" else "json"), card, "````"])  # the card may hold ``` fences


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default=os.path.join(REPO, "README.md"), help="the Markdown file to write into")
    parser.add_argument("--print", action="store_true", help="print the block instead of writing it")
    args = parser.parse_args(argv)
    try:
        body = excerpt()
        if args.print:
            print(body)
        else:
            fill_block(args.readme, "progress", body, kind="excerpt", what="the excerpt")
            print(f"excerpt written into {args.readme}")
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
