"""A few suite variants side by side on one dataset, from the results file alone (`suite.py compare`).

The READMEs quote pairwise figures ("widths only against the one-layer pull: +0.0019, p = 0.04") that
the report's tables do not hold: the report tests every variant against SASRec only. This module
computes them in one repeatable step. The first variant named is the reference; every variant's
means (test metric, analytic FLOPs) are taken over the seeds all the named variants share, so a row's
difference from the reference is the mean of its per-seed differences, and its p-value is the
two-sided paired t-test (``compress.suite.stats.paired_t_test``) of those same seeds. A seed that
only some of the variants have is left out, and the output says so. Where a file holds two records
of one variant and seed (a cell rerun under other options), the last one counts, as in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Collection, Dict, List, Optional, Sequence

from compress.errors import ConfigError
from compress.suite.pareto import Records, by_field, score
from compress.suite.results import METRICS, PROTOCOLS, read_records
from compress.suite.stats import mean_std, paired_t_test

SPLIT = "test"


@dataclass(frozen=True)
class Row:
    """One variant's figures over the shared seeds; ``diff`` and ``p`` are None for the reference."""

    variant: str
    label: str
    own_seeds: int  # how many seeds the variant has on the dataset, shared or not
    score: float  # mean of the metric over the shared seeds
    flops: float  # mean analytic FLOPs over the shared seeds
    diff: Optional[float]
    p: Optional[float]  # None with fewer than two shared seeds


@dataclass(frozen=True)
class Comparison:
    dataset: str
    metric: str
    protocol: str
    seeds: List[int]  # the seeds every variant has
    left_out: Dict[str, List[int]]  # variant -> its seeds that are not shared
    rows: List[Row]


def _names(values: Collection[str]) -> str:
    return ", ".join(sorted(values)) or "none"


def _check_names(records: Records, dataset: str, variants: Sequence[str], known_variants: Collection[str],
                 known_datasets: Collection[str], source: str, stale: Records = ()) -> None:
    by_dataset = by_field(records, "dataset")
    if not dataset:
        raise ConfigError(f"compare needs --dataset NAME; {source} holds {_names(by_dataset)}")
    if len(variants) < 2:
        raise ConfigError(f"compare needs at least two variants, the first being the reference; got "
                          f"{_names(variants)}: name more with --variants REF,OTHER[,...]")
    twice = sorted({v for v in variants if list(variants).count(v) > 1})
    if twice:
        raise ConfigError(f"variant(s) {', '.join(twice)} named more than once in --variants; name each once")
    if dataset not in by_dataset:
        if dataset not in known_datasets:
            raise ConfigError(f"unknown dataset {dataset!r}; the preset runs {_names(known_datasets)}, and "
                              f"{source} holds records for {_names(by_dataset)}")
        raise ConfigError(f"{source} has no records for dataset {dataset!r}; it holds records for "
                          f"{_names(by_dataset)}: run the suite on {dataset} first or pick one of those")
    present = {r["variant"] for r in by_dataset[dataset]}
    everywhere = {v: {r["dataset"] for r in rows} for v, rows in by_field(records, "variant").items()}
    for v in variants:
        if v in present:
            continue
        if any(r["dataset"] == dataset and r["variant"] == v for r in stale):
            raise ConfigError(f"the records of variant {v!r} on {dataset} in {source} are built on a cell that was run "
                              f"again since (or is missing), so they are not counted; run it again there (suite.py "
                              f"run --datasets {dataset} --variants {v})")
        if v not in known_variants and v not in everywhere:
            raise ConfigError(f"unknown variant {v!r}; {source} holds for {dataset}: {_names(present)}")
        elsewhere = f" (it has records for {_names(everywhere[v])})" if v in everywhere else ""
        raise ConfigError(f"variant {v!r} has no records for dataset {dataset!r} in {source}{elsewhere}; run it "
                          f"there first (suite.py run --datasets {dataset} --variants {v}) or pick one of "
                          f"{_names(present)}")


def paired_values(records: Records, dataset: str, variants: Sequence[str], metric: str, protocol: str,
                  known_variants: Collection[str] = (), known_datasets: Collection[str] = (),
                  source: str = "the results file", stale: Records = ()):
    """(the seeds every variant has, each variant's records on them, its metric on them, and for each
    variant with seeds the others lack, those seeds): the names checked first (``stale``: the records
    ``read_records`` left out as built on a cell no longer counted, named when a variant has only those).
    Bad input raises a one-line ``ConfigError``."""
    _check_names(records, dataset, variants, known_variants, known_datasets, source, stale)
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    by_variant = by_field([r for r in records if r["dataset"] == dataset], "variant")
    seeds_of = {v: {r["seed"]: r for r in by_variant[v]} for v in variants}  # one record a seed (read_records)
    shared = sorted(set.intersection(*(set(s) for s in seeds_of.values())))
    if not shared:
        have = "; ".join(f"{v}: {', '.join(map(str, sorted(s)))}" for v, s in seeds_of.items())
        raise ConfigError(f"the variants share no seed on {dataset} ({have}); run the missing seeds first")
    picked = {v: [seeds_of[v][s] for s in shared] for v in variants}
    held = set.intersection(*(set(r["metrics"].get(f"{SPLIT}/{protocol}", {})) for rows in picked.values()
                              for r in rows))
    if metric not in held:
        raise ConfigError(f"the records hold no {SPLIT} metric {metric!r} ({protocol}); choose one of "
                          f"{_names(m for m in held if '@' in m)}")
    values = {v: [score(r, protocol, metric, SPLIT) for r in rows] for v, rows in picked.items()}
    left_out = {v: sorted(set(s) - set(shared)) for v, s in seeds_of.items() if set(s) - set(shared)}
    return shared, picked, values, left_out


def compare(records: Records, dataset: str, variants: Sequence[str], metric: str = "ndcg@10",
            protocol: str = "full", known_variants: Collection[str] = (), known_datasets: Collection[str] = (),
            source: str = "the results file", stale: Records = ()) -> Comparison:
    """``variants`` (the first is the reference) on ``dataset``, paired by seed. ``known_variants`` and
    ``known_datasets`` (the suite file's) only tell an unknown name from one not run yet; ``source``
    names the results file in error messages. Bad input raises a one-line ``ConfigError``."""
    shared, picked, values, left_out = paired_values(records, dataset, variants, metric, protocol, known_variants,
                                                     known_datasets, source, stale)
    reference = values[variants[0]]
    rows = []
    for v in variants:
        first = v == variants[0]
        rows.append(Row(v, picked[v][0]["label"], len(shared) + len(left_out.get(v, [])), mean_std(values[v])[0],
                        mean_std([r["cost"]["flops_analytic"] for r in picked[v]])[0],
                        None if first else mean_std([a - b for a, b in zip(values[v], reference)])[0],
                        None if first else paired_t_test(values[v], reference)))
    return Comparison(dataset, metric, protocol, shared, left_out, rows)


def compare_file(results: str, dataset: str, variants: Sequence[str], **kwargs: Any) -> Comparison:
    """``compare`` on the records of the results file at ``results`` (an error if it has none)."""
    finished = read_records(results)
    return compare(finished.records, dataset, variants, source=results, stale=finished.stale, **kwargs)


def aligned(table: List[List[str]]) -> List[str]:
    """The rows of ``table`` as lines, each column padded to its widest cell."""
    widths = [max(len(line[i]) for line in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]


def p_text(p: Optional[float]) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2f}" if p >= 0.01 else f"{p:.2g}"  # 2 decimals, but a small p is not shown as 0.00


def format_comparison(c: Comparison) -> str:
    """A plain-text table, one row per variant, under a line saying what was paired and how."""
    name = METRICS.get(c.metric, c.metric)
    ref = c.rows[0].variant
    head = [f"{c.dataset}: {SPLIT} {name} ({c.protocol}) and analytic FLOPs, means over the {len(c.seeds)} "
            f"seed{'' if len(c.seeds) == 1 else 's'} all {len(c.rows)} variants share ({', '.join(map(str, c.seeds))})",
            f"diff and p: against the reference {ref}, two-sided paired t-test, paired by seed"]
    table = [["variant", "seeds", name, "FLOPs (M)", "diff", "p", "label"]]
    for r in c.rows:
        seeds = str(len(c.seeds)) + (f" of {r.own_seeds}" if r.own_seeds != len(c.seeds) else "")
        table.append([r.variant, seeds, f"{r.score:.4f}", f"{r.flops / 1e6:.2f}",
                      "-" if r.diff is None else f"{r.diff:+.4f}", "-" if r.diff is None else p_text(r.p), r.label])
    lines = head + aligned(table)
    lines += [f"left out: {v} seed{'' if len(s) == 1 else 's'} {', '.join(map(str, s))} (not run for every variant)"
              for v, s in c.left_out.items()]
    if len(c.seeds) < 2:
        lines.append("p: n/a with fewer than 2 shared seeds")
    return "\n".join(lines)
