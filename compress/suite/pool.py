"""Matched cells pooled across datasets (`suite.py pool`): is one method ahead of another at all?

Three seeds a cell rarely separate two methods that stand within a few per cent of each other, so each
cell on its own reads as a tie, and a tie says nothing of how large a difference could hide in it.
Pooling asks the question the cells share (at the same shape or FLOPs, does the variant score more
than its reference?) over every (cell, seed) at once. A cell is a (dataset, variant, reference) triple
paired by the seeds both have; each seed gives the relative difference (variant − reference) /
reference, so that a dataset scoring 0.03 weighs as much as one scoring 0.3. The pooled figure is the
mean of those differences with its two-sided t interval and the one-sample t-test against zero. Each
(cell, seed) counts as one observation: the seeds of a cell share its data, so where cells differ in
their own right the interval is narrower than one over cell means would be, and the output says so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Sequence, Tuple

from compress.errors import ConfigError
from compress.suite.compare import SPLIT, aligned, p_text, paired_values
from compress.suite.pareto import BASELINE_METHODS, Records, is_dnsrec
from compress.suite.results import METRICS, read_records
from compress.suite.stats import mean_interval, mean_std, paired_t_test

Triple = Tuple[str, str, str]  # (dataset, variant, reference)


@dataclass(frozen=True)
class Cell:
    """One triple over the seeds its variant and reference share."""

    dataset: str
    variant: str
    reference: str
    seeds: List[int]
    relative: List[float]  # (variant − reference) / reference, per seed
    flops_ratio: float  # mean analytic FLOPs of the variant over the reference's
    left_out: Dict[str, List[int]]  # variant or reference -> its seeds the other lacks


@dataclass(frozen=True)
class Pooled:
    metric: str
    protocol: str
    level: float
    cells: List[Cell]
    mean: float  # of every cell's relative differences together
    interval: Optional[Tuple[float, float]]  # None with fewer than two differences
    p: Optional[float]


def parse_triples(text: Optional[str]) -> List[Triple]:
    """``DATASET:VARIANT:REFERENCE[,...]`` as triples; a malformed or repeated one is a ``ConfigError``."""
    triples: List[Triple] = []
    for part in (text or "").split(","):
        if not part.strip():
            continue
        fields = tuple(f.strip() for f in part.split(":"))
        if len(fields) != 3 or not all(fields):
            raise ConfigError(f"--pairs takes DATASET:VARIANT:REFERENCE triples separated by commas; got "
                              f"{part.strip()!r}")
        if fields in triples:
            raise ConfigError(f"{part.strip()} is named more than once in --pairs; name each cell once")
        if fields[1] == fields[2]:
            raise ConfigError(f"{fields[1]} named more than once in --pairs cell {part.strip()}, as the variant "
                              "and as its reference; give another reference")
        triples.append(fields)
    if not triples:
        raise ConfigError("pool needs --pairs DATASET:VARIANT:REFERENCE[,...]: at least one variant and the "
                          "reference it is compared with")
    return triples


def parse_level(text: str) -> float:
    """A confidence level in (0, 1), e.g. 0.95; anything else is a ``ConfigError``."""
    try:
        level = float(text)
    except ValueError:
        level = math.nan
    if not 0.0 < level < 1.0:  # NaN fails this too
        raise ConfigError(f"--level is a confidence level between 0 and 1 (e.g. 0.95); got {text!r}")
    return level


def _cell(records: Records, triple: Triple, metric: str, protocol: str, known: Dict[str, Any]) -> Cell:
    dataset, variant, reference = triple
    seeds, picked, values, left_out = paired_values(records, dataset, [variant, reference], metric, protocol, **known)
    relative = []
    for seed, ours, theirs in zip(seeds, values[variant], values[reference]):
        if not (math.isfinite(ours) and math.isfinite(theirs) and theirs > 0):
            raise ConfigError(f"{dataset} seed {seed}: {variant} scores {ours} and {reference} {theirs}; a relative "
                              f"difference needs finite scores and a reference above 0")
        relative.append((ours - theirs) / theirs)
    flops = {v: mean_std([r["cost"]["flops_analytic"] for r in picked[v]])[0] for v in (variant, reference)}
    return Cell(dataset, variant, reference, seeds, relative, flops[variant] / flops[reference], left_out)


def summarize(cells: List[Cell], metric: str = "ndcg@10", protocol: str = "full", level: float = 0.95) -> Pooled:
    """The cells' relative differences pooled: their mean, t interval at ``level`` and p against 0."""
    every = [d for c in cells for d in c.relative]
    return Pooled(metric, protocol, level, cells, mean_std(every)[0] if every else math.nan,
                  mean_interval(every, level), paired_t_test(every, [0.0] * len(every)) if every else None)


def pool(records: Records, triples: Sequence[Triple], metric: str = "ndcg@10", protocol: str = "full",
         level: float = 0.95, known_variants: Collection[str] = (), known_datasets: Collection[str] = (),
         source: str = "the results file", stale: Records = ()) -> Pooled:
    """Every triple's relative differences, per cell and pooled; names are checked as ``compare``
    checks them. Bad input raises a one-line ``ConfigError``."""
    known = {"known_variants": known_variants, "known_datasets": known_datasets, "source": source, "stale": stale}
    return summarize([_cell(records, t, metric, protocol, known) for t in triples], metric, protocol, level)


def pulled_triples(records: Records) -> List[Triple]:
    """Every (dataset, DNS-Rec variant, baseline variant) whose search was pulled to that baseline
    cell's FLOPs (``budget:`` in the suite file, ``needs.budget`` in the records), sorted."""
    by_key = {r["key"]: r for r in records}
    found = set()
    for r in records:
        budget = by_key.get((r.get("needs") or {}).get("budget"))
        if budget is not None and budget["method"] in BASELINE_METHODS and is_dnsrec([r]):
            found.add((r["dataset"], r["variant"], budget["variant"]))
    return sorted(found)


PULLED_NOTE = ("**Pulled to a baseline's FLOPs.** Each DNS-Rec search pulled to a baseline cell's FLOPs (`budget:`) "
               "against that cell, paired by seed: the relative difference (DNS-Rec − baseline) / baseline of test "
               "NDCG@10 (full), per seed and pooled across datasets (two-sided 95% t interval, one-sample t-test "
               "against 0; each seed counts as an independent pair, and a baseline cell met by several pulls once "
               "per pull). `suite.py pool` computes the same for any cells.")


def pulled_section(records: Records) -> str:
    """``PULLED_NOTE``, a row per pulled cell and the pooled line; empty where no search was pulled. A
    cell whose baseline scores 0 on a seed (no relative difference) is named and left out."""
    cells, skipped = [], []
    for triple in pulled_triples(records):
        try:
            cells.append(_cell(records, triple, "ndcg@10", "full", {}))
        except ConfigError as exc:
            skipped.append(f"{triple[0]} {triple[1]} left out: {exc}")
    if not cells and not skipped:
        return ""
    p = summarize(cells)
    rows = ["| dataset | DNS-Rec, pulled | baseline | seeds | FLOPs ratio | per seed | mean |", "|---" * 7 + "|"]
    rows += [f"| {c.dataset} | {c.variant} | {c.reference} | {len(c.seeds)} | {c.flops_ratio:.2f}x | "
             f"{', '.join(_pct(d) for d in c.relative)} | {_pct(mean_std(c.relative)[0])} |" for c in cells]
    return "\n\n".join([PULLED_NOTE, "\n".join(rows)] + ([_pooled_line(p)] if cells else []) + skipped)


def pool_file(results: str, triples: Sequence[Triple], **kwargs: Any) -> Pooled:
    """``pool`` on the records of the results file at ``results`` (an error if it has none)."""
    finished = read_records(results)
    return pool(finished.records, triples, source=results, stale=finished.stale, **kwargs)


def _pct(x: float) -> str:
    return f"{round(100 * x, 1) + 0.0:+.1f}%"  # + 0.0: a mean that rounds to zero is +0.0%, not -0.0%


def _pooled_line(p: Pooled) -> str:
    n = sum(len(c.relative) for c in p.cells)
    cells = f"{len(p.cells)} cell{'' if len(p.cells) == 1 else 's'}"
    if p.interval is None:
        return (f"pooled over {n} (cell, seed) pair{'' if n == 1 else 's'} of {cells}: mean {_pct(p.mean)}; interval "
                "and p: n/a with fewer than 2 pairs")
    return (f"pooled over {n} (cell, seed) pairs of {cells}: mean {_pct(p.mean)}, {100 * p.level:g}% CI "
            f"{_pct(p.interval[0])} to {_pct(p.interval[1])}, p = {p_text(p.p)} (one-sample t-test against 0; each "
            "seed counted as an independent pair)")


def format_pooled(p: Pooled) -> str:
    """One row per cell, then the pooled line and what it assumes."""
    name = METRICS.get(p.metric, p.metric)
    lines = [f"{SPLIT} {name} ({p.protocol}), each variant against its reference paired by seed: relative "
             f"difference (variant - reference) / reference"]
    table = [["dataset", "variant", "reference", "seeds", "FLOPs ratio", "mean", "per seed"]]
    table += [[c.dataset, c.variant, c.reference, str(len(c.seeds)), f"{c.flops_ratio:.2f}x",
               _pct(mean_std(c.relative)[0]), ", ".join(_pct(d) for d in c.relative)] for c in p.cells]
    lines += aligned(table)
    lines.append(_pooled_line(p))
    lines += [f"left out: {c.dataset} {v} seed{'' if len(s) == 1 else 's'} {', '.join(map(str, s))} (not run "
              f"for both)" for c in p.cells for v, s in c.left_out.items()]
    return "\n".join(lines)
