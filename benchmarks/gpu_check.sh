#!/usr/bin/env bash
# IVON on one CUDA GPU, in at most ~10 minutes on an H100/H200:
#   1. benchmarks/ivon_speed.py on CUDA: MLP, CNN, ResNet-18, batch 128, and the transformer and LoRA step at
#      their own batch of 16, fp32 and bf16 autocast (ratios to AdamW, ivon-opt in the same run);
#   2. a short noisy-label run on full MNIST (symmetric 40%, the paper's 3-layer CNN): ERM vs LS vs IVON;
#   3. the gpu-marked tests;
#   4. table.md in the output folder with all of it.
#
#   benchmarks/gpu_check.sh MNIST_DIR [OUT]     (MNIST_DIR: the IDX files; OUT defaults to $OUT, else runs/gpu-check)
#
# Every stage has its own time limit, so a slow stage shows up as "timed out" in the table instead of overrunning.
set -uo pipefail

DATA=${1:?usage: benchmarks/gpu_check.sh MNIST_DIR [OUT]}
DEST=${2:-${OUT:-runs/gpu-check}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
cd "$ROOT" || exit 1
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} >"$DEST/env.txt" 2>&1

status() { # stage name, exit code -> one line in status.txt
    case $2 in
        0) echo "$1: ok" ;;
        124) echo "$1: timed out" ;;
        *) echo "$1: failed (exit $2)" ;;
    esac >>"$DEST/status.txt"
}
: >"$DEST/status.txt"

# 1. speed (about 1 minute each; limits: 2 x (100 + 45) s + 3 x 70 s + 60 s = 9.3 min at most)
for amp in none bf16; do
    timeout 100 python benchmarks/ivon_speed.py --device cuda --autocast "$amp" --batch 128 --threads 0 \
        --repeats 15 --inner 5 --models mlp,cnn,resnet18 >"$DEST/speed_$amp.txt" 2>&1
    status "speed $amp" $?
    timeout 45 python benchmarks/ivon_speed.py --device cuda --autocast "$amp" --threads 0 \
        --repeats 15 --inner 5 --models transformer,lora >"$DEST/speed_transformer_$amp.txt" 2>&1
    status "speed transformer/LoRA $amp" $?
done

# 2. noisy-label MNIST, 3 epochs per method (well under a minute each)
for method in erm ls ivon; do
    extra=()
    [ "$method" = ls ] && extra=(--alpha 0.5)
    [ "$method" = ivon ] && extra=(--ess-factor 0.2 --test-samples 8)
    timeout 70 varsmooth train --dataset mnist --data-dir "$DATA" --model cnn3 --method "$method" \
        --corruption symmetric:0.4 --epochs 3 --seed 0 --device cuda --no-progress "${extra[@]}" \
        --out "$DEST/mnist/$method" >"$DEST/mnist_$method.log" 2>&1
    status "mnist $method" $?
done

# 3. gpu-marked tests
timeout 60 python -m pytest -m gpu -q -p no:cacheprovider >"$DEST/gpu_tests.txt" 2>&1
status "gpu tests" $?

# 4. the table
python - "$DEST" <<'EOF'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])
lines = ["# IVON GPU check", "", "```", (out / "env.txt").read_text().strip(), "```", ""]
lines += ["| autocast | model | optimizer | median ms | ratio to AdamW |", "|---|---|---|---|---|"]
for amp in ("none", "bf16"):
    paths = [out / f"speed_{amp}.txt", out / f"speed_transformer_{amp}.txt"]
    for row in (r for p in paths if p.exists() for r in p.read_text().splitlines()):
        parts = row.split()
        if len(parts) == 4 and parts[1] in {"adamw", "sgd", "ivon", "ivon-ref", "ivon-opt"}:
            lines.append(f"| {amp} | {parts[0]} | {parts[1]} | {parts[2]} | {parts[3]} |")
lines += ["", "MNIST, symmetric 40% label noise, cnn3, 3 epochs, seed 0:", ""]
lines += ["| method | test acc (mean) | best test acc | predictive test acc | time s |", "|---|---|---|---|---|"]
for method in ("erm", "ls", "ivon"):
    path = out / "mnist" / method / "final.json"
    if not path.exists():
        lines.append(f"| {method} | missing | | | |")
        continue
    m = json.loads(path.read_text())
    pred = m.get("test_pred_acc")
    lines.append(f"| {method} | {m['test_acc']:.4f} | {m.get('test_acc_best', float('nan')):.4f} | "
                 f"{'' if pred is None else f'{pred:.4f}'} | {m.get('time_s', float('nan')):.1f} |")
tests = (out / "gpu_tests.txt").read_text().strip().splitlines() if (out / "gpu_tests.txt").exists() else []
lines += ["", "gpu tests: " + (tests[-1] if tests else "no output"), "", "stages:", ""]
lines += ["- " + s for s in (out / "status.txt").read_text().splitlines()]
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "wrote $DEST/table.md"
