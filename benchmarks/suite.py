"""The benchmark suite: run the cells of a preset of benchmarks/suite.yaml, resumably, then report.

    python benchmarks/suite.py run --preset smoke                 # embedded sample, minutes
    COMPRESS_DATA_DIR=../shared/data python benchmarks/suite.py run --preset cpu   # hours on a 2-core CPU
    COMPRESS_DATA_DIR=../shared/data python benchmarks/suite.py run --preset paper --device cuda
    python benchmarks/suite.py report --preset smoke              # tables + plots from results.jsonl
    python benchmarks/suite.py remeasure --preset smoke           # costs again, side by side, current code
    python benchmarks/suite.py compare --preset cpu --dataset ml-100k --variants dnsrec_warm_tp_widths,dnsrec_warm_tp
    python benchmarks/suite.py pool --preset cpu --pairs lastfm:dnsrec_warm_tp_paper_dims:torch_pruning_paper,...

`run` appends one JSON line per finished cell to OUT/results.jsonl (default OUT:
benchmarks/results/suite_<preset>) and keeps each cell's run directory in OUT_runs/; run it again
(after a crash, or with more seeds or variants) and finished cells are skipped. `--variants`,
`--seeds` and `--datasets` narrow the preset. `report` writes OUT/report.md and its PNGs from the
results file alone; `--readme FILE` (repeatable) also writes the summary table between FILE's
`<!-- suite:PRESET -->` and `<!-- /suite:PRESET -->` markers. `remeasure` loads the saved model of
every cell the report counts and measures their cost again side by side with the current code (FLOPs,
parameters, latency interleaved across models, peak memory), keeping the replaced figures in each
record. `compare` prints, for one dataset, each named variant's mean test NDCG@10 (or `--metric`) and
FLOPs over the seeds they all share, and its difference from the first variant with the paired t-test's
p-value (`compress.suite.compare`). `pool` takes DATASET:VARIANT:REFERENCE cells and prints each
variant's relative difference from its reference per seed, then all of them pooled across datasets
with a t interval and p-value (`compress.suite.pool`): how large a difference a row of per-dataset
ties could hide. Bad input ends in a one-line `error: ...` and exit code 2; Ctrl-C in one line and exit
code 130: the finished cells are kept, and `run` again with the same arguments continues (a training or
search stopped midway resumes from its checkpoint; a Torch-Pruning fine-tune, which keeps none, starts over).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from compress.errors import CompressError, ConfigError, Interrupted  # noqa: E402
from compress.runtime.allocator import tune_allocator  # noqa: E402
from compress.suite import load_plan, run_plan, write_report  # noqa: E402
from compress.suite.blocks import fill_block  # noqa: E402
from compress.suite.compare import compare_file, format_comparison  # noqa: E402
from compress.suite.pool import format_pooled, parse_level, parse_triples, pool_file  # noqa: E402
from compress.suite.remeasure import remeasure  # noqa: E402
from compress.suite.report import readme_block  # noqa: E402
from compress.suite.results import PROTOCOLS  # noqa: E402
from compress.suite.spec import read_spec  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = "results.jsonl"


def _list(text: Optional[str], cast=str) -> Optional[List]:
    if text is None:
        return None
    try:
        return [cast(part.strip()) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as a comma-separated list of {cast.__name__}s") from None


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    for name in ("run", "report", "remeasure", "compare", "pool"):
        p = sub.add_parser(name)
        p.add_argument("--preset", default="smoke", help="smoke, cpu or paper (see --suite)")
        p.add_argument("--suite", default=os.path.join(HERE, "suite.yaml"), help="the experiment list (YAML)")
        p.add_argument("--out", default=None, help="default: benchmarks/results/suite_<preset>")
    for name in ("run", "report", "remeasure"):
        sub.choices[name].add_argument("--readme", action="append", default=[], help="a Markdown file whose "
                                       "<!-- suite:PRESET --> block gets the summary table (repeatable)")
    for name in ("run", "remeasure"):
        p = sub.choices[name]
        p.add_argument("--runs", default=None, help="run directories (default: OUT_runs)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (one GPU per parallel slice)")
        p.add_argument("--datasets", default=None, help="comma-separated subset of the preset's datasets")
        p.add_argument("--no-report", action="store_true", help="skip writing the report afterwards")
    run = sub.choices["run"]
    run.add_argument("--variants", default=None, help="comma-separated subset (what they build on is added)")
    sub.choices["remeasure"].add_argument("--variants", default=None,
                                          help="comma-separated subset, measured side by side (default: all)")
    run.add_argument("--seeds", default=None, help="comma-separated seeds instead of the preset's")
    p = sub.choices["compare"]  # variants side by side on one dataset, paired by seed
    p.add_argument("--dataset", default=None, help="the dataset to compare on")
    p.add_argument("--variants", default=None, help="comma-separated, at least two; the first is the reference")
    p = sub.choices["pool"]  # matched cells of several datasets, their relative differences pooled
    p.add_argument("--pairs", default=None, help="comma-separated DATASET:VARIANT:REFERENCE cells")
    p.add_argument("--level", default="0.95", help="the confidence level of the pooled interval")
    for name in ("compare", "pool"):
        p = sub.choices[name]
        p.add_argument("--results", default=None, help="the results file to read (default: OUT/results.jsonl)")
        p.add_argument("--metric", default="ndcg@10", help="test metric as the records name it (recall@10, "
                       "mrr@10, ...)")
        p.add_argument("--protocol", default="full", choices=PROTOCOLS, help="full ranking or 100 popular negatives")
    return ap


def known_names(args: argparse.Namespace) -> Dict[str, Any]:
    """The suite file's variants and the preset's datasets, which tell ``compare`` and ``pool`` an
    unknown name from one not run yet (an unknown preset or a broken suite file is an error here too)."""
    plan = load_plan(args.suite, args.preset)
    return {"known_variants": read_spec(args.suite).get("variants") or {},
            "known_datasets": {cell.dataset for cell in plan.cells}}


def compare(args: argparse.Namespace, results: str) -> None:
    """``compare``: names checked against the suite file's preset, figures from the results file."""
    comparison = compare_file(args.results or results, args.dataset, _list(args.variants) or [], metric=args.metric,
                              protocol=args.protocol, **known_names(args))
    print(format_comparison(comparison))


def pooled(args: argparse.Namespace, results: str) -> None:
    """``pool``: the cells' names checked against the suite file's preset, figures from the results file."""
    result = pool_file(args.results or results, parse_triples(args.pairs), metric=args.metric,
                       protocol=args.protocol, level=parse_level(args.level), **known_names(args))
    print(format_pooled(result))


def main(argv: Optional[List[str]] = None) -> int:
    args = parser().parse_args(argv)
    out = args.out or os.path.join(HERE, "results", f"suite_{args.preset}")
    results = os.path.join(out, RESULTS)
    try:
        if args.command in ("compare", "pool"):
            (compare if args.command == "compare" else pooled)(args, results)
            return 0
        if args.command == "report":
            load_plan(args.suite, args.preset)  # an unknown preset or a broken suite file is an error here too
        elif args.command == "remeasure":
            variants, datasets = _list(args.variants), _list(args.datasets)
            plan = load_plan(args.suite, args.preset, variants, None, datasets)  # unknown names refused, as by run
            n = remeasure(results, args.runs or out.rstrip("/") + "_runs", plan.batches, plan.repeats, args.device,
                          datasets, log=lambda line: print(line, flush=True), variants=variants)
            print(f"{n} cells re-measured side by side; results in {results}")
            if args.no_report:
                return 0
        else:
            tune_allocator()
            plan = load_plan(args.suite, args.preset, _list(args.variants), _list(args.seeds, int),
                             _list(args.datasets))
            counts = run_plan(plan, results, args.runs or out.rstrip("/") + "_runs", args.device,
                              log=lambda line: print(line, flush=True))
            print(f"{counts['run']} cells run, {counts['skipped']} already done; results in {results}")
            if args.no_report:
                return 0
        files = write_report(results, out)
        print(f"report: {files['report']}, plots: {', '.join(files['plots'])}")
        command = f"python benchmarks/suite.py report --preset {args.preset}" + \
            "".join(f" --readme {markdown}" for markdown in args.readme)
        for markdown in args.readme:
            body = readme_block(results, files["report"], markdown, command)
            fill_block(markdown, args.preset, body)
            print(f"summary table written into {markdown}")
    except (Interrupted, KeyboardInterrupt):  # a cell's checkpointed stop, or Ctrl-C anywhere else
        print(interrupted(args.command, results), file=sys.stderr)
        return 130
    except CompressError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def interrupted(command: str, results: str) -> str:
    """The one line an interrupt ends ``command`` with, in the suite's words: what a rerun does (the
    library's own message would say to `resume`, which the suite does by itself)."""
    if command == "run":
        return (f"interrupted; the finished cells are kept in {results}: rerun `suite.py run` with the same "
                "arguments to continue")
    return f"interrupted; rerun `suite.py {command}` with the same arguments"


if __name__ == "__main__":
    sys.exit(main())
