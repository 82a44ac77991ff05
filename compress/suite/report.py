"""The suite's report, from the results file alone: Markdown tables and PNG plots.

- A summary across datasets: test NDCG@10 (full) and FLOPs of SASRec, DNS-Rec and the baselines,
  and whether a DNS-Rec point dominates each baseline at equal FLOPs (``compress.suite.pareto``);
  then every search pulled to a baseline cell's FLOPs against that cell, per seed and pooled across
  datasets (``compress.suite.pool``).
- Table 1 of the paper: users, items, interactions, average length, density and where the
  sequence order comes from (timestamps, or file order for rating sets without them).
- Per dataset: every variant's NDCG, Recall and MRR @10 (full and pop100) on test and on
  validation as mean ± std over seeds, cost
  (FLOPs, params, latency, peak memory, wall time), and the two-sided paired t-test p-value of
  test NDCG@10 (full) against the baseline variant (dense SASRec), paired by seed, when at least
  ``MIN_SEEDS`` seeds of both are present.
- Plots per dataset: accuracy vs FLOPs with the Pareto front, the width and depth controllers'
  p and q over search epochs of the ``dnsrec`` cells (one line style per seed), and the λ sweep
  (FLOPs and NDCG of DNS-Rec cells whose options differ only in the trade-off λ).
"""
from __future__ import annotations

import os
from collections import defaultdict
from typing import Any, Dict, List, Optional

from compress.app.plots import _pyplot, draw_controllers, save
from compress.files import write_text
from compress.store.card import exit_depths
from compress.suite.pareto import BASELINE_METHODS, dominance, is_dnsrec, pareto, point
from compress.suite.pareto import by_field as _by
from compress.suite.pareto import score as _test
from compress.suite.pool import pulled_section
from compress.suite.results import METRICS, PROTOCOLS, read_records
from compress.suite.stats import mean_std, paired_t_test

MIN_SEEDS = 3
BASELINE = "sasrec"
OURS = "dnsrec"
TRACED = (OURS, f"{OURS}_paper")  # whose controllers are plotted: the searched design, else the paper's
Records = List[Dict[str, Any]]


def _fmt(values: List[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    spec = f",.{digits}f" if digits == 0 else f".{digits}f"  # thousands separators for counts
    return f"{mean:{spec}}" if len(values) < 2 or std == 0 else f"{mean:{spec}} ± {std:{spec}}"


def _arch(r: Dict[str, Any]) -> str:
    a = r["arch"]
    return f"{a['hidden']}/{a['inner']} x {a['layers']}, {a['attention']}, L_d={a['gate_layers']}"


def _p_value(rows: Records, base: Optional[Records]) -> str:
    if not base:
        return "n/a"
    mine, theirs = {r["seed"]: _test(r, "full") for r in rows}, {r["seed"]: _test(r, "full") for r in base}
    seeds = sorted(set(mine) & set(theirs))
    if rows is base or len(seeds) < MIN_SEEDS:
        return "—" if rows is base else f"n/a ({len(seeds)} paired seed{'' if len(seeds) == 1 else 's'})"
    p = paired_t_test([mine[s] for s in seeds], [theirs[s] for s in seeds])
    return "n/a (non-finite scores)" if p is None else f"{p:.3g}"


def dataset_table(records: Records) -> str:
    lines = ["| dataset | users | items | interactions | avg. length | density | sequence order |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, rows in _by(records, "dataset").items():
        s = rows[0]["dataset_stats"]
        order = "timestamps" if s.get("timed", True) else "file order (no timestamps)"
        lines.append(f"| {name} | {s['users']:,} | {s['items']:,} | {s['interactions']:,} | {s['avg_len']:.2f} | "
                     f"{100 * s['density']:.4f}% | {order} |")
    return "\n".join(lines)


def accuracy_table(rows_by_variant: Dict[str, Records], split: str = "test") -> str:
    """NDCG, Recall and MRR @10 under both protocols on ``split``; on test also the paired p-value."""
    base = rows_by_variant.get(BASELINE)
    heads = [f"{name} {p}" for p in PROTOCOLS for name in METRICS.values()]
    p_head = f" p vs {BASELINE} (paired t, NDCG@10 full) |" if split == "test" else ""
    lines = ["| method | arch (d/D x L, attention, gates) | seeds | " + " | ".join(heads) + " |" + p_head,
             "|---|---|---:|" + "---:|" * (len(heads) + (split == "test"))]
    for rows in rows_by_variant.values():
        archs = sorted({_arch(r) for r in rows})
        values = " | ".join(_fmt([_test(r, p, m, split) for r in rows]) for p in PROTOCOLS for m in METRICS)
        p_cell = f" {_p_value(rows, base)} |" if split == "test" else ""
        lines.append(f"| {rows[0]['label']} | {'; '.join(archs)} | {len(rows)} | {values} |{p_cell}")
    return "\n".join(lines)


def cost_table(rows_by_variant: Dict[str, Records], batches: List[int]) -> str:
    head = " | ".join(f"latency b={b} (ms) | peak memory b={b} (MB)" for b in batches)
    lines = [f"| method | FLOPs analytic | FLOPs measured | params | {head} | search (s) | train / retrain (s) | "
             "wall (s) | latency measured |", "|---|" + "---:|" * (6 + 2 * len(batches)) + "---|"]
    for rows in rows_by_variant.values():
        def col(key: str, digits: int = 1) -> str:
            values = [r["cost"][key] for r in rows if key in r["cost"]]
            return _fmt(values, digits) if values else "n/a"

        per_batch = " | ".join(f"{col(f'latency_ms@{b}', 2)} | {col(f'peak_memory_MB@{b}')}" for b in batches)
        search = [r["seconds"]["search"] for r in rows if "search" in r["seconds"]]
        train = [r["seconds"].get("retrain", r["seconds"].get("train", 0.0)) for r in rows]
        lines.append(f"| {rows[0]['label']} | {col('flops_analytic', 0)} | {col('flops_measured', 0)} | "
                     f"{col('params', 0)} | {per_batch} | {_fmt(search, 1) if search else '—'} | {_fmt(train, 1)} | "
                     f"{_fmt([r['wall_s'] for r in rows], 1)} | {measured_in(rows)} |")
    return "\n".join(lines)


def measured_in(rows: Records) -> str:
    """The pass(es) the rows' latency comes from: a ``remeasure`` pass (date, torch threads, models side
    by side) or the cell's own run. Latencies of different passes are not comparable (load, threads)."""
    passes = set()
    for r in rows:
        m = r.get("measured")
        if m:
            threads = m["machine"].get("torch_threads", "?")
            passes.add(f"{m['at'][:10]}, {threads} thr., {m['side_by_side']} side by side")
        else:
            passes.add(f"per cell, {r['machine'].get('torch_threads', '?')} thr.")
    return "; ".join(sorted(passes))


def _mega(flops: float) -> str:
    return f"{flops / 1e6:.{1 if flops >= 1e7 else 2}f} M"


def matched_to(record: Dict[str, Any], variant_of: Dict[str, str]) -> Optional[str]:
    """The DNS-Rec variant whose decision a baseline record was measured at (its shape or FLOPs)."""
    return variant_of.get(record.get("needs", {}).get("reference"))


def dominance_lines(rows_by_variant: Dict[str, Records]) -> str:
    def at(p) -> str:  # a mean point: its label, NDCG@10 and FLOPs
        return f"{rows_by_variant[p[0]][0]['label']} ({p[2]:.4f} @ {_mega(p[1])})"

    def against(p, base) -> str:  # the accuracy gap, and whether the seeds say it is more than noise
        gap = f"ΔNDCG@10 {p[2] - base[2]:+.4f}"
        paired = _p_value(rows_by_variant[p[0]], rows_by_variant[base[0]])
        return f"{gap}, paired p = {paired}" if not paired.startswith("n/a") else f"{gap}, {paired[5:-1]}"

    def verdict(row: Dict[str, Any]) -> str:
        by, best, base = row["dominated_by"], row["best_within"], row["baseline"]
        if by is not None:
            return f"dominated by {at(by)}; {against(by, base)}"
        if best is None:
            return "not dominated: no DNS-Rec point within its FLOPs"
        return f"not dominated: the best DNS-Rec point within its FLOPs is {at(best)}; {against(best, base)}"

    variant_of = {r["key"]: r["variant"] for rows in rows_by_variant.values() for r in rows}

    def matched(row: Dict[str, Any]) -> str:  # the baseline against the decision it was matched to
        ref = matched_to(rows_by_variant[row["baseline"][0]][0], variant_of)
        if ref is None:
            return ""
        decision = point(rows_by_variant[ref])
        return f"; against {at(decision)}, the decision it is matched to: {against(decision, row['baseline'])}"

    lines = [f"- {at(row['baseline'])}, {row['seeds']} seed(s): {verdict(row)}{matched(row)}"
             for row in dominance(rows_by_variant)]
    return "\n".join(lines) if lines else "No baseline variants (uniform shrinking, pruning) in these results."


def summary_table(records: Records) -> str:
    """Per dataset: mean test NDCG@10 (full) @ FLOPs of SASRec, DNS-Rec, the DNS-Rec ablations run on
    every dataset, matched by a baseline or named by a verdict, each baseline, and the verdicts (naming
    the DNS-Rec variant that dominates)."""
    datasets = _by(records, "dataset")
    baselines = sorted({r["variant"] for r in records if r["method"] in BASELINE_METHODS})
    variant_of = {r["key"]: r["variant"] for r in records}
    measured_against = {matched_to(r, variant_of) for r in records if r["method"] in BASELINE_METHODS}
    rows_of = {name: _by(rows, "variant") for name, rows in datasets.items()}
    verdicts_of = {name: dominance(by_variant) for name, by_variant in rows_of.items()}
    dominating = {row["dominated_by"][0] for rows in verdicts_of.values() for row in rows if row["dominated_by"]}
    others = [v for v, rows in _by(records, "variant").items()  # DNS-Rec points run on every dataset, those a
              if v != OURS and is_dnsrec(rows)                  # baseline column is matched to, and those a
              and ({r["dataset"] for r in rows} == set(datasets)  # verdict names
                   or v in measured_against or v in dominating)]
    columns = [v for v in (BASELINE, OURS) if any(r["variant"] == v for r in records)] + others + baselines
    labels = {r["variant"]: r["label"] for r in records}
    lines = ["| dataset | " + " | ".join(labels[v] for v in columns) + " | DNS-Rec dominates at equal FLOPs |",
             "|---|" + "---:|" * len(columns) + "---|"]
    for name, by_variant in rows_of.items():
        cells = []
        for v in columns:
            if v not in by_variant:
                cells.append("—")
                continue
            flops = mean_std([r["cost"]["flops_analytic"] for r in by_variant[v]])[0]
            cells.append(f"{_fmt([_test(r, 'full') for r in by_variant[v]])} @ {_mega(flops)} "
                         f"({len(by_variant[v])})")
        verdicts = [f"{row['baseline'][0]}: " + (f"yes ({row['dominated_by'][0]})" if row["dominated_by"] else "no")
                    for row in verdicts_of[name]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {', '.join(verdicts) or '—'} |")
    return "\n".join(lines)


def traced_rows(rows_by_variant: Dict[str, Records]) -> Records:
    """The records whose search trace is plotted: the first variant of ``TRACED`` that has any."""
    for variant in TRACED:
        rows = [r for r in rows_by_variant.get(variant, []) if "search" in r["info"]]
        if rows:
            return rows
    return []


def plot_controllers(dataset: str, rows: Records, path: str) -> str:
    """p and q over search epochs of every seed's search (``info.search`` of the records)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = ("-", "--", ":", "-.")
    for i, r in enumerate(sorted(rows, key=lambda r: r["seed"])):
        trace = r["info"]["search"]
        draw_controllers(axes, trace["history"], trace["widths"], exit_depths(trace),
                         linestyle=styles[i % len(styles)], marker=".")
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), fontsize=8)
    seeds = ", ".join(str(r["seed"]) for r in sorted(rows, key=lambda r: r["seed"]))
    fig.suptitle(f"{dataset}: {rows[0]['label']}\ncontrollers over search epochs (seeds {seeds}: solid, dashed, "
                 "dotted)", fontsize=10)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return path


FAMILIES = {"DNS-Rec (λ > 0)": "tab:red", "other searches (λ = 0, ProxylessNAS)": "tab:orange",
            "uniform shrinking, pruning": "tab:blue", "dense": "tab:gray"}


def _family(rows: Records) -> str:
    if is_dnsrec(rows):
        return "DNS-Rec (λ > 0)"
    method = rows[0]["method"]
    others = {"dnsrec": "other searches (λ = 0, ProxylessNAS)", "dense": "dense"}
    return others.get(method, "uniform shrinking, pruning")


def plot_pareto(dataset: str, rows_by_variant: Dict[str, Records], path: str) -> str:
    plt = _pyplot()
    points = [point(rows) for rows in rows_by_variant.values()]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    seen = set()
    for (label, flops, mean, std), rows in zip(points, rows_by_variant.values()):
        family = _family(rows)
        ax.errorbar(flops, mean, yerr=std, fmt="o", capsize=3, color=FAMILIES[family],
                    label=None if family in seen else family)
        seen.add(family)
        ax.annotate(label, (flops, mean), fontsize=7, xytext=(4, 3), textcoords="offset points")
    front = pareto(points)
    ax.plot([p[1] for p in front], [p[2] for p in front], "--", color="gray", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("FLOPs per history (analytic, 2 x multiply-adds)")
    ax.set_ylabel("test NDCG@10 (full ranking)")
    ax.set_title(f"{dataset}: accuracy vs FLOPs (mean ± std over seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return path


def lambda_sweep(records: Records) -> Records:
    """DNS-Rec cells (weights transferred) whose options, search and retraining, differ only in λ: the
    largest such group."""
    groups: Dict[str, Records] = defaultdict(list)
    for r in records:
        if r["method"] == "dnsrec" and not r["from_scratch"]:
            rest = {k: v for k, v in r["options"].items() if k not in ("tradeoff", "seed")}
            groups[repr((sorted(rest.items()), sorted(r["info"].get("retrain_options", {}).items())))].append(r)
    best = max(groups.values(), key=lambda g: len({r["options"]["tradeoff"] for r in g}), default=[])
    return best if len({r["options"]["tradeoff"] for r in best}) > 1 else []


def plot_lambda(dataset: str, rows: Records, path: str) -> str:
    plt = _pyplot()
    by_lambda = _by([{**r, "lam": r["options"]["tradeoff"]} for r in rows], "lam")
    lams = sorted(by_lambda)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, values, label in ((axes[0], lambda g: [r["cost"]["flops_analytic"] for r in g], "FLOPs of the decision"),
                              (axes[1], lambda g: [_test(r, "full") for r in g], "test NDCG@10 (full)")):
        stats = [mean_std(values(by_lambda[lam])) for lam in lams]
        ax.errorbar(lams, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3)
        ax.set_xscale("symlog", linthresh=min([lam for lam in lams if lam > 0], default=0.01))
        ax.set_xlabel("trade-off λ")
        ax.set_ylabel(label)
    fig.suptitle(f"{dataset}: DNS-Rec λ sweep (mean ± std over seeds)")
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return path


SUMMARY_NOTE = ("Test NDCG@10 (full ranking), mean ± std @ mean analytic FLOPs (seeds). A baseline is dominated when "
                "a DNS-Rec point (the paper's penalty or its pull to a budget, λ > 0, any ablation) costs no more "
                "FLOPs and scores at least as well.")


def left_out_note(superseded: int, stale: Records) -> str:
    """Said beside the cell count when records were left out (``read_records``): older records of a (dataset,
    variant, seed), and records built on a cell no longer counted, such as baselines matched to a decision
    searched again since, with the variants to rerun; so the report is not silent about what it does not count."""
    parts = []
    if superseded:
        parts.append(f"and {superseded} older record{'' if superseded == 1 else 's'} of a dataset, variant and seed "
                     "recorded again later, superseded by the last one and not counted")
    if stale:
        variants = ", ".join(sorted({r["variant"] for r in stale}))
        parts.append(f"{len(stale)} record{'' if len(stale) == 1 else 's'} built on a superseded or missing cell "
                     f"(matched to a decision no longer counted) left out: rerun their variants ({variants})")
    return f" ({'; '.join(parts)})" if parts else ""


def readme_block(results: str, report: str, markdown: str, command: str) -> str:
    """The summary table for a README at ``markdown``, with links relative to it and the command that wrote it."""
    records, superseded, stale = read_records(results)
    here = os.path.dirname(os.path.abspath(markdown))
    rel = os.path.relpath(os.path.abspath(report), here)
    pulled = pulled_section(records)
    return (f"Written by `{command}` from `{os.path.relpath(os.path.abspath(results), here)}` ({len(records)} cells"
            f"{left_out_note(superseded, stale)}); every table and plot: [{rel}]({rel}). {SUMMARY_NOTE}\n\n"
            f"{summary_table(records)}"
            + (f"\n\n{pulled}" if pulled else ""))


def write_report(results: str, out_dir: str) -> Dict[str, Any]:
    """Write ``out_dir/report.md`` and its PNGs from the results file; returns their paths."""
    records, superseded, stale = read_records(results)
    os.makedirs(out_dir, exist_ok=True)
    batches = sorted({int(k.split("@")[1]) for r in records for k in r["cost"] if k.startswith("latency_ms@")})
    presets = sorted({r["preset"] for r in records})
    commits = sorted({r["versions"]["commit"] for r in records if "commit" in r["versions"]})
    at = f" (commit {', '.join(commits)})" if commits else ""
    remeasured = [r["measured"] for r in records if "measured" in r]
    if remeasured:
        code = sorted({m["versions"].get("commit", m["versions"]["compress"]) for m in remeasured})
        when = sorted({m["at"] for m in remeasured})
        at += (f". Costs of {len(remeasured)} of the {len(records)} cells were re-measured side by side from their "
               f"saved models (`suite.py remeasure`, {', '.join(when)}, code {', '.join(code)}); the other costs are "
               "as measured when each cell finished")
    r0 = records[0]
    parts = [f"# Benchmark suite report\n\nFrom `{os.path.basename(results)}`: {len(records)} cells"
             f"{left_out_note(superseded, stale)}, "
             f"preset(s) {', '.join(presets)}; compress {r0['versions']['compress']}{at}, "
             f"torch {r0['versions']['torch']}, "
             f"{r0['machine']['processor']} ({r0['machine']['cpus']} CPUs, device {r0['machine']['device']}"
             f"{', ' + r0['machine']['gpu'] if 'gpu' in r0['machine'] else ''}). Metrics are on the test split "
             "(leave-one-out); mean ± sample std over seeds. p: two-sided paired t-test over seeds (exact Student-t, "
             f"n − 1 degrees of freedom) of test NDCG@10 (full) against {BASELINE}, shown with "
             f"≥ {MIN_SEEDS} paired seeds. FLOPs = 2 x multiply-adds of scoring one full-length history.",
             f"## Summary\n\n{SUMMARY_NOTE}\n\n{summary_table(records)}"]
    pulled = pulled_section(records)
    parts += ([pulled] if pulled else []) + ["## Datasets\n\n" + dataset_table(records)]
    files = {"report": os.path.join(out_dir, "report.md"), "plots": []}
    for dataset, rows in _by(records, "dataset").items():
        by_variant = _by(rows, "variant")
        section = [f"## {dataset}", "### Accuracy (test)", accuracy_table(by_variant),
                   "### Accuracy (validation, what models are selected on)", accuracy_table(by_variant, "valid"),
                   "### Cost", cost_table(by_variant, batches)]
        png = plot_pareto(dataset, by_variant, os.path.join(out_dir, f"pareto_{dataset}.png"))
        files["plots"].append(png)
        section.append(f"![accuracy vs FLOPs on {dataset}]({os.path.basename(png)})")
        section.append("### DNS-Rec against the baselines at equal FLOPs\n\n" + dominance_lines(by_variant))
        traced = traced_rows(by_variant)
        if traced:
            png = plot_controllers(dataset, traced, os.path.join(out_dir, f"controllers_{dataset}.png"))
            files["plots"].append(png)
            section.append(f"![DNS-Rec p and q over search epochs on {dataset}]({os.path.basename(png)})")
        sweep = lambda_sweep(rows)
        if sweep:
            png = plot_lambda(dataset, sweep, os.path.join(out_dir, f"lambda_{dataset}.png"))
            files["plots"].append(png)
            section.append(f"![λ sweep on {dataset}]({os.path.basename(png)})")
        parts.append("\n\n".join(section))
    write_text(files["report"], "\n\n".join(parts) + "\n")
    return files
