"""Accuracy against FLOPs: each variant's mean point, the Pareto front, and the suite's target
question, "does DNS-Rec dominate the baselines at equal FLOPs?", answered from the records alone.

A point is a variant's mean over its seeds: (name, analytic FLOPs, test NDCG@10 full, its std).
A baseline point (uniform shrinking, Torch-Pruning) is dominated when a DNS-Rec point costs no more
FLOPs and scores at least as well. DNS-Rec points are the search variants with the paper's penalty,
or its pull to a hard budget (``penalty: budget``), and λ > 0 (any gate depth, selection or retraining
start); λ = 0 (DARTS-style) and the ProxylessNAS-style penalty are other methods and are not counted.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, List, Optional, Tuple

from compress.suite.stats import mean_std

Records = List[Dict[str, Any]]
Point = Tuple[str, float, float, float]  # (variant, mean FLOPs, mean test NDCG@10 full, its std)
BASELINE_METHODS = ("uniform", "prune")
DNSREC_PENALTIES = ("dnsrec", "budget")  # L_RC as the paper's share of FLOPs, or as the distance from a budget


def score(r: Dict[str, Any], protocol: str = "full", metric: str = "ndcg@10", split: str = "test") -> float:
    return r["metrics"][f"{split}/{protocol}"][metric]


def by_field(records: Records, field: str) -> Dict[Any, Records]:
    out: Dict[Any, Records] = defaultdict(list)
    for r in records:
        out[r[field]].append(r)
    return dict(out)


def point(rows: Records) -> Point:
    mean, std = mean_std([score(r) for r in rows])
    return rows[0]["variant"], mean_std([r["cost"]["flops_analytic"] for r in rows])[0], mean, std


def pareto(points: List[Point]) -> List[Point]:
    """The points no other point beats on both fewer FLOPs and higher accuracy, by FLOPs."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p[1], -p[2])):
        if p[2] > best:
            front.append(p)
            best = p[2]
    return front


def is_dnsrec(rows: Records) -> bool:
    opts = rows[0]["options"]
    return rows[0]["method"] == "dnsrec" and opts.get("penalty", "dnsrec") in DNSREC_PENALTIES and opts["tradeoff"] > 0


def dominance(rows_by_variant: Dict[str, Records]) -> List[Dict[str, Any]]:
    """For every baseline variant: its point, the DNS-Rec point that dominates it (the most accurate
    one among those that do) or None, and the most accurate DNS-Rec point within its FLOPs."""
    ours = [point(rows) for rows in rows_by_variant.values() if is_dnsrec(rows)]
    out = []
    for rows in rows_by_variant.values():
        if rows[0]["method"] not in BASELINE_METHODS:
            continue
        base = point(rows)
        within = [p for p in ours if p[1] <= base[1]]
        best: Optional[Point] = max(within, key=lambda p: p[2], default=None)
        out.append({"baseline": base, "seeds": len(rows), "best_within": best,
                    "dominated_by": best if best is not None and best[2] >= base[2] else None})
    return out
