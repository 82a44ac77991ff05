"""The README's ML-1M headline table, assembled from the three benchmark results alone:

    python benchmarks/ml1m_table.py

reads benchmarks/results/sasrec_ml1m.json (dense SASRec, `sasrec_ml1m.py`), sasrec_ml1m_linear.json
(SASRec + linear attention, `sasrec_ml1m.py --linear`) and dnsrec_ml1m.json (DNS-Rec search +
retrain, `dnsrec_ml1m.py`, which also measures the cost of all three models side by side in one
process) and prints a Markdown table with the ratios against the dense SASRec.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
METRICS = [("full", "ndcg@10"), ("full", "recall@10"), ("full", "mrr@10"), ("pop100", "ndcg@10"),
           ("pop100", "recall@10")]


MAKERS = {"sasrec_ml1m.json": "benchmarks/sasrec_ml1m.py", "sasrec_ml1m_linear.json": "benchmarks/sasrec_ml1m.py --linear",
          "dnsrec_ml1m.json": "benchmarks/dnsrec_ml1m.py"}


def read(name: str) -> Dict:
    path = os.path.join(RESULTS, name)
    if not os.path.exists(path):
        raise SystemExit(f"error: {path} is missing; run python {MAKERS[name]} first")
    with open(path) as fh:
        return json.load(fh)


def arch_text(a: Dict) -> str:
    gates = f", gates L_d = {a['gate_layers']}" if a.get("gate_layers") else ""
    return f"{a['hidden']}/{a['inner']} x {a['layers']}, {a['attention']}{gates}"


def rows() -> List[Dict]:
    dense, linear, dnsrec = read("sasrec_ml1m.json"), read("sasrec_ml1m_linear.json"), read("dnsrec_ml1m.json")
    cost = dnsrec["cost"]
    out = []
    for label, key, result in (("SASRec (softmax)", "sasrec", dense), ("SASRec + linear attention", "sasrec_linear",
                                                                       linear)):
        out.append({"method": label, "arch": arch_text(result["model"]["arch"]), "epochs": result["epochs_run"],
                    "metrics": {p: result["test"][p] for p in ("full", "pop100")}, "cost": cost[key]})
    retrain = dnsrec["retrain"]
    out.append({"method": "DNS-Rec (search + retrain)", "arch": arch_text(retrain["arch"]),
                "epochs": f"{len(dnsrec['search_history'])} + {len(dnsrec['retrain_history'])}",
                "metrics": {p: dnsrec["metrics"][f"test/{p}"] for p in ("full", "pop100")}, "cost": cost["dnsrec"]})
    return out


def table(items: List[Dict]) -> str:
    base = items[0]["cost"]
    head = ["method", "arch (d/D x L)", "epochs", *(f"{m.upper()} {p}" for p, m in METRICS), "FLOPs",
            "params", "peak MiB b=256", "latency b=1", "latency b=256"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 3)]
    for r in items:
        c = r["cost"]

        def ratio(key: str) -> str:
            return "" if c is base else f" ({base[key] / c[key]:.2f}x)"
        cells = [r["method"], r["arch"], str(r["epochs"]),
                 *(f"{r['metrics'][p][m]:.4f}" for p, m in METRICS),
                 f"{c['flops_analytic'] / 1e6:.1f} M{ratio('flops_analytic')}", f"{c['params']:,}",
                 f"{c['peak_memory_MB@256']:.0f}{ratio('peak_memory_MB@256')}",
                 f"{c['latency_ms@1']:.2f} ms{ratio('latency_ms@1')}",
                 f"{c['latency_ms@256']:.0f} ms{ratio('latency_ms@256')}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(rows()))
