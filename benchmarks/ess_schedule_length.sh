#!/usr/bin/env bash
# Does a candidate ess that wins a short, complete schedule also win the long one? IVON on all of MNIST (the
# noisy-accuracy cpu-full settings: MLP, 54k train / 6k noisy validation, batch 128, h0 0.5, horizon beta2), at each
# ess factor of the auto grid, trained for a full schedule of SHORT and of LONG epochs; prints one row per run with
# the noisy-validation scores at its end and the test accuracy.
# Usage: benchmarks/ess_schedule_length.sh MNIST_DIR OUT_DIR [SEED] [SHORT] [LONG]
set -euo pipefail
data=${1:?MNIST_DIR}; out=${2:?OUT_DIR}; seed=${3:-0}; short=${4:-8}; long=${5:-30}
mkdir -p "$out"
jobs=()
for corruption in symmetric:0.5 pairflip:0.45; do
  for factor in 1 0.25 0.0625 0.015625; do
    for epochs in "$short" "$long"; do
      jobs+=("$corruption $factor $epochs")
    done
  done
done
printf '%s\n' "${jobs[@]}" | xargs -P 2 -L 1 bash -c '
  run="$0"/${1/:/-}_s"$4"_f"$2"_e"$3"
  [ -f "$run/final.json" ] || OMP_NUM_THREADS=1 varsmooth train --dataset mnist --data-dir "$5" --model mlp \
    --method ivon --corruption "$1" --seed "$4" --epochs "$3" --batch-size 128 --val-fraction 0.1 --test-samples 16 \
    --eval-every 1000 --hess-init 0.5 --ess-factor "$2" --no-progress --out "$run" > "$run.log" 2>&1
' "$out" _ _ _ "$seed" "$data" 2>/dev/null || true
python - "$out" <<'PY'
import json, pathlib, sys
rows = []
for final in sorted(pathlib.Path(sys.argv[1]).glob("*/final.json")):
    f = json.loads(final.read_text())
    rows.append((f["corruption_spec"], f["seed"], f["ess"] / f["n_train"], int(f["epoch"]), f["val_acc"],
                 f["val_pred_acc"], f["val_pred_nll"], f["test_acc"], f["test_pred_acc"]))
print("| corruption | seed | ess / N | epochs | val acc (mean) | val acc (pred.) | val NLL (pred.) | test acc (mean) | test acc (pred.) |")
print("|---|---|---|---|---|---|---|---|---|")
for c, s, f, e, va, vpa, vpn, ta, tpa in sorted(rows, key=lambda r: (r[0], r[1], r[3], -r[2])):
    print(f"| {c} | {s} | {f:g} | {e} | {100*va:.1f} | {100*vpa:.1f} | {vpn:.4f} | {100*ta:.1f} | {100*tpa:.1f} |")
PY
