#!/usr/bin/env bash
# IVON and the training engine on one CUDA GPU, in at most ~9.5 minutes on an H100/H200 (one call):
#   1. benchmarks/ivon_speed.py: MLP, CNN, ResNet-18 at batch 128, ResNet-34 at batch 50 (the paper's), and the
#      transformer and LoRA step at their own batch of 16, each in fp32 and bf16 autocast (ratios to AdamW, ivon-opt
#      in the same run);
#   2. benchmarks/engine_speed.py on CUDA: engine.train vs a bare loop, ERM and IVON, MLP/cnn3/ResNet-18, fp32, bf16;
#   3. one `paper`-preset sweep cell (ERM, LS, SAM, IVON; bf16, ResNet-34, batch 50) for a fixed number of steps on
#      CIFAR-10-format batches written on the spot (random images);
#   4. `varsmooth run ... --plan` of the paper presets (noisy-accuracy paper and paper-cifar100, 8-GPU cluster);
#   5. a short noisy-label run on full MNIST (symmetric 40%, the paper's 3-layer CNN): ERM vs LS vs IVON;
#   6. the gpu-marked tests;
#   7. table.md in the output folder with all of it.
#
#   benchmarks/gpu_check.sh MNIST_DIR [OUT]     (MNIST_DIR: the IDX files; OUT defaults to $OUT, else runs/gpu-check)
#   benchmarks/gpu_check.sh --cpu-dry-run MNIST_DIR [OUT]     every stage on the CPU at toy sizes: checks the script
#
# Every stage has its own time limit, so a slow stage shows up as "timed out" in the table instead of overrunning.
set -uo pipefail

DRY=0
if [ "${1:-}" = "--cpu-dry-run" ]; then DRY=1; shift; fi
DATA=${1:?usage: benchmarks/gpu_check.sh [--cpu-dry-run] MNIST_DIR [OUT]}
DEST=${2:-${OUT:-runs/gpu-check}}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd)
DATA=$(cd "$DATA" && pwd)
cd "$ROOT" || exit 1
if [ $DRY = 1 ]; then
    DEV=cpu
    SPEED=(--repeats 1 --inner 1 --warmup 1 --models mlp)
    SPEED34=(--repeats 1 --inner 1 --warmup 1 --batch 4)  # after --batch 50: the last one counts
    SPEEDTF=(--repeats 1 --inner 1 --warmup 1)
    T34=300
    ENGINE=(--models mlp --steps 5 --repeats 1)
    CELL=(--set train_subset=100 --set model=mlp
          --set "train={precision: bf16, weight_decay: 0.001, test_samples: 2, schedule_epochs: 200}")
    CIFAR_N=20
    PLAN=(--set model=mlp)
    MNIST=(--train-subset 500 --epochs 1 --model mlp)
    echo "cpu dry run: toy sizes, no GPU" >"$DEST/env.txt"
    python -c "import torch; print('torch', torch.__version__)" >>"$DEST/env.txt" 2>&1
else
    DEV=cuda
    SPEED=(--repeats 15 --inner 5 --models mlp,cnn,resnet18)
    SPEED34=(--repeats 10 --inner 3)
    SPEEDTF=(--repeats 15 --inner 5)
    T34=45
    ENGINE=(--steps 300,200,100 --repeats 3)
    # 200 steps of batch 50 per run: the first epoch of the paper's 200-epoch schedule (warm-up, milestones)
    CELL=(--set train_subset=10000
          --set "train={precision: bf16, weight_decay: 0.001, test_samples: 32, schedule_epochs: 200}")
    CIFAR_N=10000
    PLAN=()
    MNIST=(--epochs 3)
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device')" || exit 1
    {
        nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
    } >"$DEST/env.txt" 2>&1
fi

status() { # stage name, exit code -> one line in status.txt
    case $2 in
        0) echo "$1: ok" ;;
        124) echo "$1: timed out" ;;
        *) echo "$1: failed (exit $2)" ;;
    esac >>"$DEST/status.txt"
}
: >"$DEST/status.txt"

# 1. optimizer step speed (limits: 2 x 60 s + 2 x 45 s + 2 x 40 s)
for amp in none bf16; do
    timeout 60 python benchmarks/ivon_speed.py --device $DEV --autocast "$amp" --batch 128 --threads 0 \
        "${SPEED[@]}" >"$DEST/speed_$amp.txt" 2>&1
    status "speed $amp" $?
    timeout $T34 python benchmarks/ivon_speed.py --device $DEV --autocast "$amp" --threads 0 --batch 50 \
        --models resnet34 "${SPEED34[@]}" >"$DEST/speed34_$amp.txt" 2>&1
    status "speed resnet34 $amp" $?
    timeout 40 python benchmarks/ivon_speed.py --device $DEV --autocast "$amp" --threads 0 \
        --models transformer,lora "${SPEEDTF[@]}" >"$DEST/speed_transformer_$amp.txt" 2>&1
    status "speed transformer/LoRA $amp" $?
done

# 2. engine vs bare loop (limits: 2 x 75 s)
for prec in fp32 bf16; do
    timeout 75 python benchmarks/engine_speed.py --device $DEV --precision $prec "${ENGINE[@]}" \
        >"$DEST/engine_$prec.txt" 2>&1
    status "engine_speed $prec" $?
done

# 3. one paper-preset cell on CIFAR-10-format batches made here (limit 90 s)
python - "$DEST/cifar10" "$CIFAR_N" <<'PY'
import pickle, sys
from pathlib import Path
import numpy as np
folder, n = Path(sys.argv[1]), int(sys.argv[2])
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
    size = n if name != "test_batch" else max(n // 5, 10)  # a 2,000-image test split keeps evaluation short
    data = rng.integers(0, 256, (size, 3072), dtype=np.uint8)
    batch = {b"labels": rng.integers(0, 10, size).tolist(), b"data": data, b"batch_label": name.encode()}
    (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
(folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}, protocol=2))
PY
timeout 90 varsmooth run noisy-accuracy --preset paper --data-dir "$DEST/cifar10" --seeds 0 --no-progress \
    --set 'corruptions=[symmetric:0.4]' --set 'alphas=[0.1]' --set 'rhos=[0.05]' --set epochs=1 "${CELL[@]}" \
    --out "$DEST/paper_cell" >"$DEST/paper_cell.txt" 2>&1
status "paper cell" $?

# 4. plans of the paper presets (limit 2 x 60 s)
for preset in paper paper-cifar100; do
    timeout 60 varsmooth run noisy-accuracy --preset "$preset" --plan --cluster-gpus 8 "${PLAN[@]}" \
        >"$DEST/plan_$preset.txt" 2>&1
    status "plan $preset" $?
done

# 5. noisy-label MNIST (well under a minute each)
for method in erm ls ivon; do
    extra=()
    [ "$method" = ls ] && extra=(--alpha 0.5)
    [ "$method" = ivon ] && extra=(--ess-factor 0.2 --test-samples 8)
    timeout 70 varsmooth train --dataset mnist --data-dir "$DATA" --model cnn3 --method "$method" \
        --corruption symmetric:0.4 --seed 0 --device $DEV --no-progress "${extra[@]}" "${MNIST[@]}" \
        --out "$DEST/mnist/$method" >"$DEST/mnist_$method.log" 2>&1
    status "mnist $method" $?
done

# 6. gpu-marked tests
if [ $DRY = 0 ]; then
    timeout 60 python -m pytest -m gpu -q -p no:cacheprovider >"$DEST/gpu_tests.txt" 2>&1
    status "gpu tests" $?
fi

# 7. the table
python - "$DEST" <<'EOF_PY'
import json
import sys
from pathlib import Path

out = Path(sys.argv[1])


def text(name):
    path = out / name
    return path.read_text().strip() if path.exists() else "missing"


lines = ["# GPU check", "", "```", text("env.txt"), "```", ""]
lines += ["| autocast | model | optimizer | median ms | ratio to AdamW |", "|---|---|---|---|---|"]
for amp in ("none", "bf16"):
    for name in (f"speed_{amp}.txt", f"speed34_{amp}.txt", f"speed_transformer_{amp}.txt"):
        for row in text(name).splitlines():
            parts = row.split()
            if len(parts) == 4 and parts[1] in {"adamw", "sgd", "ivon", "ivon-ref", "ivon-opt"}:
                lines.append(f"| {amp} | {parts[0]} | {parts[1]} | {parts[2]} | {parts[3]} |")
for prec in ("fp32", "bf16"):
    lines += ["", f"engine.train vs a bare loop, {prec}:", ""]
    lines += [row for row in text(f"engine_{prec}.txt").splitlines() if row.startswith(("|", "device"))]
lines += ["", "paper preset (noisy-accuracy, symmetric 40%, 1 epoch, random CIFAR-format images):", ""]
lines += ["| run | steps | time s | test acc |", "|---|---|---|---|"]
for final in sorted((out / "paper_cell").glob("**/final.json")):
    m = json.loads(final.read_text())
    hist = [json.loads(x) for x in (final.parent / "metrics.jsonl").read_text().splitlines()]
    steps = m.get("n_train", 0) // 50
    lines.append(f"| {final.parent.name} | {steps} | {sum(h.get('time_s', 0) for h in hist):.1f} | "
                 f"{m.get('test_acc', float('nan')):.3f} |")
for preset in ("paper", "paper-cifar100"):
    lines += ["", f"`varsmooth run noisy-accuracy --preset {preset} --plan --cluster-gpus 8`:", "", "```",
              text(f"plan_{preset}.txt"), "```"]
lines += ["", "MNIST, symmetric 40% label noise, cnn3 (MLP in a dry run), seed 0:", ""]
lines += ["| method | test acc (mean) | best test acc | predictive test acc |", "|---|---|---|---|"]
for method in ("erm", "ls", "ivon"):
    path = out / "mnist" / method / "final.json"
    if not path.exists():
        lines.append(f"| {method} | missing | | |")
        continue
    m = json.loads(path.read_text())
    pred = m.get("test_pred_acc")
    lines.append(f"| {method} | {m['test_acc']:.4f} | {m.get('test_acc_best', float('nan')):.4f} | "
                 f"{'' if pred is None else f'{pred:.4f}'} |")
tests = text("gpu_tests.txt").splitlines()
lines += ["", "gpu tests: " + (tests[-1] if tests else "no output"), "", "stages:", ""]
lines += ["- " + s for s in text("status.txt").splitlines()]
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
EOF_PY
echo "wrote $DEST/table.md"
