"""One short run of the checks a CUDA machine needs, a few minutes in all:

1. forward/backward parity of the supernet and of every sliced candidate on the device against
   CPU float64 (small shapes; softmax and linear attention, gates on);
2. a short search and retrain on the embedded sample, in fp32 and bf16 (fp16 too on CUDA);
3. inference latency and peak memory of the dense 2-layer d=128 SASRec vs the sliced decision.

    python benchmarks/gpu_check.py                 # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu    # the same checks on CPU (a dry run)

Writes benchmarks/results/gpu_check_<device>.json and prints every figure.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import compress  # noqa: E402
from compress.engine.losses import next_item_loss  # noqa: E402
from compress.files import write_json  # noqa: E402
from compress.measure.cost import profile  # noqa: E402
from compress.measure.evaluation import split_metrics  # noqa: E402
from compress.nas.controllers import one_hot  # noqa: E402
from compress.runtime.devices import resolve_device  # noqa: E402
from compress.store.provenance import versions  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parity(device: torch.device) -> dict:
    """Max |device − CPU float64| of scores and weight gradients, per attention kind and candidate."""
    out = {}
    gen = torch.Generator().manual_seed(0)
    items = torch.randint(1, 61, (8, 32), generator=gen)
    items[3, 20:] = 0
    targets = torch.roll(items, -1, 1)
    for attention in ("softmax", "linear"):
        torch.manual_seed(0)
        base = compress.get_backbone("sasrec")(compress.ArchSpec(64, 128, 4, 2), 60, 32, dropout=0.0)
        sn = compress.wrap(base, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)), attention=attention).eval()
        diffs = {}
        for k in range(len(sn.widths)):
            for depth in range(2):
                runs = {}  # CPU float64 reference first, then the device in float32
                for dev, dtype in ((torch.device("cpu"), torch.float64), (device, torch.float32)):
                    net = sn.slice(k, depth).to(dev, dtype).eval()
                    scores = net.predict(items.to(dev))
                    loss = next_item_loss(net(items.to(dev)), targets.to(dev), net.score)
                    loss.backward()
                    runs[dev.type + str(dtype)] = (scores.detach().double().cpu(),
                                                   [p.grad.double().cpu() for p in net.parameters()])
                (s64, g64), (s32, g32) = runs.values()
                finite = torch.isfinite(s64)  # column 0 (padding) is -inf in both
                diffs[f"width{k}_depth{depth + 1}"] = {
                    "scores_max_abs_diff": float((s64[finite] - s32[finite]).abs().max()),
                    "grad_max_abs_diff": max(float((a - b).abs().max()) for a, b in zip(g64, g32))}
        with torch.no_grad():  # the supernet on the device computes the sliced model exactly
            sn = sn.to(device)
            gap = (sn.predict(items.to(device), one_hot(1, 2, device), one_hot(0, 2, device)) -
                   sn.slice(1, 0).eval().predict(items.to(device)))[:, 1:].abs().max()
        out[attention] = {"candidates": diffs, "supernet_vs_slice_on_device": float(gap)}
    return out


def short_runs(device: torch.device) -> dict:
    data = compress.load_dataset()
    out = {}
    precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
    for precision in precisions:
        torch.manual_seed(0)
        model = compress.get_backbone("sasrec")(compress.ArchSpec(64, 256, 4, 2), data.n_items, 50)
        t0 = time.perf_counter()
        sn = compress.wrap(model, space=compress.SearchSpace((0.0, 0.5), (0.0, 0.5)))
        result = compress.search(sn, data, compress.SearchConfig(epochs=2, batch_size=256, precision=precision), device)
        small = result.slice()
        compress.fit(small, data, compress.TrainConfig(epochs=3, batch_size=256, precision=precision), device)
        out[precision] = {"seconds": round(time.perf_counter() - t0, 1), "decision": result.arch.to_dict(),
                          "test_ndcg@10_full": split_metrics(small, data, device=device)["test/full"]["ndcg@10"]}
        print(precision, json.dumps(out[precision]), flush=True)
    return out


def latency(device: torch.device) -> dict:
    dense = compress.get_backbone("sasrec")(compress.ArchSpec(128, 256, 8, 2), 3706, 200).to(device).eval()
    small = compress.get_backbone("sasrec")(compress.ArchSpec(64, 128, 4, 1, "linear", 2), 3706, 200).to(device).eval()
    return profile({"dense_sasrec_128x2": dense, "sliced_64_128x1_linear_gates": small}, [1, 256], repeats=20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    device = resolve_device(args.device)
    out = {"command": " ".join(["python", "benchmarks/gpu_check.py", *sys.argv[1:]]), "versions": versions(),
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    out["parity"] = parity(device)
    print("parity", json.dumps(out["parity"]), flush=True)
    out["short_runs"] = short_runs(device)
    out["latency"] = latency(device)
    print("latency", json.dumps(out["latency"]), flush=True)
    write_json(os.path.join(RESULTS, f"gpu_check_{device.type}.json"), out)


if __name__ == "__main__":
    main()
