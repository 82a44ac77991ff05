#!/usr/bin/env bash
# λ sweep and a hard budget on the embedded sample, same model settings as compare.py:
#   bash benchmarks/tradeoff_default.sh
# Writes benchmarks/results/tradeoff_default.jsonl (one search + retrain result per line).
set -euo pipefail
cd "$(dirname "$0")/.."
out=benchmarks/results/tradeoff_default.jsonl
: > "$out"
common=(--seq-len 50 --hidden 64 --inner 256 --layers 2 --heads 4 --batch-size 256 --retrain-batch-size 256
        --search-epochs 10 --retrain-epochs 60 --device cpu --overwrite --json)
for variant in "--tradeoff 1" "--tradeoff 10" "--tradeoff 0.1 --max-flops 33%"; do
    # shellcheck disable=SC2086
    compress search "${common[@]}" $variant --out "benchmarks/results/tradeoff_runs/${variant// /_}" 2>/dev/null \
        | python -c "import json,sys; r=json.loads(sys.stdin.read()); r['variant']='$variant'; print(json.dumps(r))" >> "$out"
done
