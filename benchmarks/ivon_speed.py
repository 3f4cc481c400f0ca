"""Train-step time (forward, backward, optimizer step) of IVON vs AdamW, SGD and ivon-opt, as ratios to AdamW.

All optimizers train their own copy of the same model on the same fixed batch; their steps are interleaved
(one block of ``--inner`` steps per optimizer per repeat, in rotating order) so that load from other processes
hits all of them alike. Reported per optimizer: the median of the per-repeat ratios to AdamW's block of the same
repeat (the headline number), and the median milliseconds per step. ``--floor`` adds what bounds IVON from below:
forward+backward alone, drawing one Gaussian per weight (``normal_``), and IVON's sample+accumulate+update without
the forward/backward, next to AdamW's step alone.

    python benchmarks/ivon_speed.py --repeats 30 --models mlp,cnn,resnet18 --threads 1 [--floor]
    python benchmarks/ivon_speed.py --repeats 8 --models transformer,lora --threads 1
    python benchmarks/ivon_speed.py --device cuda --autocast bf16 --batch 128 --threads 0
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from varsmooth.models import build_model
from varsmooth.optim import IVON

try:
    import ivon as ivon_opt  # GPL reference implementation: benchmark/test oracle only
except ImportError:  # pragma: no cover
    ivon_opt = None

MODELS = {  # name: (architecture, input shape, batch size, train steps per timed block)
    "mlp": ("mlp", (784,), 128, 5),  # varsmooth.models MLP 784-256-256-10
    "cnn": ("small-cnn", (1, 28, 28), 128, 2),  # LeNet-style, defined below
    "cnn3": ("cnn3", (1, 28, 28), 128, 1),  # the paper's 3-layer CNN (heavy convolutions at 28x28)
    "resnet18": ("resnet18", (3, 32, 32), 50, 1),  # varsmooth.models CIFAR ResNet-18
    "resnet34": ("resnet34", (3, 32, 32), 50, 1),  # the paper's CIFAR ResNet-34
    "transformer": ("transformer", (128,), 16, 1),  # causal LM defined below: 4 layers, width 256, 3.5 M weights
    "lora": ("lora", (128,), 16, 1),  # the same transformer frozen, rank-8 adapters on its linear layers trained
}
VOCAB = 512
IVON_KW = dict(lr=0.1, ess=60000.0, hess_init=0.5, weight_decay=1e-4)


def small_cnn(num_classes: int = 10) -> nn.Module:
    """conv5x5(32)-pool-conv5x5(64)-pool-fc(128)-fc: 0.2 M parameters for 28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(), nn.Linear(128, num_classes),
    )  # fmt: skip


class Block(nn.Module):
    """Pre-LayerNorm transformer block: causal self-attention (4 heads) and a 4x MLP."""

    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        self.heads, self.ln1, self.ln2 = heads, nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.up, self.down = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, c)
        x = x + self.proj(a)
        return x + self.down(F.gelu(self.up(self.ln2(x))))


class TinyLM(nn.Module):
    """Token and position embeddings, 4 blocks of width 256, a LayerNorm and an untied head: 3.45 M weights."""

    def __init__(self, vocab: int = VOCAB, width: int = 256, layers: int = 4, seq: int = 128):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(seq, width)
        self.blocks = nn.Sequential(*(Block(width) for _ in range(layers)))
        self.ln, self.head = nn.LayerNorm(width), nn.Linear(width, vocab)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        return self.head(self.ln(self.blocks(x))).flatten(0, 1)  # (batch * seq, vocab) logits


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update B A (rank r, B zero at start), as LoRA."""

    def __init__(self, base: nn.Linear, r: int = 8):
        super().__init__()
        self.base = base.requires_grad_(False)
        self.a = nn.Parameter(torch.randn(r, base.in_features) / base.in_features**0.5)
        self.b = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + F.linear(F.linear(x, self.a), self.b)


def lora(model: nn.Module, r: int = 8) -> nn.Module:
    """Freeze ``model`` and put rank-r adapters on every linear layer of its blocks."""
    model.requires_grad_(False)
    for block in model.blocks:
        for name in ("qkv", "proj", "up", "down"):
            setattr(block, name, LoRALinear(getattr(block, name), r))
    return model


def make_optimizers(model: nn.Module, args) -> dict[str, tuple[nn.Module, torch.optim.Optimizer, bool]]:
    """name -> (model copy, optimizer, is_variational)."""
    out = {}

    def add(name, factory, variational):
        m = copy.deepcopy(model)
        out[name] = (m, factory([p for p in m.parameters() if p.requires_grad]), variational)

    add("adamw", lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-4, foreach=True), False)
    add("sgd", lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9, foreach=True), False)
    add("ivon", lambda p: IVON(p, **IVON_KW), True)
    if args.reference:
        add("ivon-ref", lambda p: IVON(p, **IVON_KW, foreach=False), True)
    if ivon_opt is not None:
        add("ivon-opt", lambda p: ivon_opt.IVON(p, **IVON_KW), True)
    return out


def train_step(model: nn.Module, opt, variational: bool, x, y, amp) -> None:
    def fwd_bwd():
        opt.zero_grad()
        with amp():
            loss = F.cross_entropy(model(x), y)
        loss.backward()

    if variational:
        with opt.sampled_params(train=True):
            fwd_bwd()
    else:
        fwd_bwd()
    opt.step()


def _timer(clock, device: torch.device):
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(fn, n: int) -> float:
        sync()
        t0 = clock()
        for _ in range(n):
            fn()
        sync()
        return (clock() - t0) / n

    return timed


def bench_model(name: str, args, clock) -> dict[str, dict[str, float]]:
    """Per optimizer: ``ratio`` (median over repeats of its block time / AdamW's in the same repeat) and ``ms``."""
    arch, shape, batch, inner = MODELS[name]
    batch, inner, device = args.batch or batch, args.inner or inner, torch.device(args.device)
    torch.manual_seed(0)
    if arch in ("transformer", "lora"):
        model = TinyLM(seq=shape[0]) if arch == "transformer" else lora(TinyLM(seq=shape[0]))
        x = torch.randint(0, VOCAB, (batch, *shape), device=device)
        y = torch.randint(0, VOCAB, (batch * shape[0],), device=device)
    else:
        model = small_cnn() if arch == "small-cnn" else build_model(arch, 10, shape)
        x, y = torch.randn(batch, *shape, device=device), torch.randint(0, 10, (batch,), device=device)
    model = model.to(device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.autocast == "bf16" else nullcontext
    opts = make_optimizers(model, args)
    timed = _timer(clock, device)
    for m, opt, var in opts.values():
        timed(lambda m=m, opt=opt, var=var: train_step(m, opt, var, x, y, amp), args.warmup)
    times: dict[str, list[float]] = {k: [] for k in opts}
    names = list(opts)
    for r in range(args.repeats):
        for k in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            m, opt, var = opts[k]
            times[k].append(timed(lambda m=m, opt=opt, var=var: train_step(m, opt, var, x, y, amp), inner))
    out = {}
    for k, v in times.items():
        ratio = statistics.median(a / b for a, b in zip(v, times["adamw"], strict=True))
        out[k] = {"ratio": ratio, "ms": statistics.median(v) * 1e3}
    if args.floor:
        out["floor"] = floor(opts, x, y, amp, timed, args.repeats, inner)
    return out


def floor(opts, x, y, amp, timed, repeats: int, inner: int) -> dict[str, float]:
    """Median ms of the pieces of a step, interleaved like the main measurement."""
    model, ivon, _ = opts["ivon"]
    adam_model, adamw, _ = opts["adamw"]
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    noise = torch.empty(n, device=x.device)
    model.zero_grad()
    with amp():
        F.cross_entropy(model(x), y).backward()

    def ivon_only():  # sample + accumulate the gradients left in p.grad + update, no forward/backward
        with ivon.sampled_params(train=True):
            pass
        ivon.step()

    def fwd_bwd():
        adam_model.zero_grad()
        with amp():
            loss = F.cross_entropy(adam_model(x), y)
        loss.backward()

    pieces = {"fwd+bwd": fwd_bwd, "draw": noise.normal_, "ivon sample+acc+update": ivon_only, "adamw step": adamw.step}
    times: dict[str, list[float]] = {k: [] for k in pieces}
    for _ in range(repeats):
        for k, fn in pieces.items():
            times[k].append(timed(fn, inner))
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="interleaved blocks per optimizer")
    ap.add_argument("--inner", type=int, default=None, help="train steps per timed block (default: per model)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--models", default="mlp,cnn,resnet18", help=f"comma list of {','.join(MODELS)}")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: torch's default)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time or this process's CPU time")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--autocast", choices=("none", "bf16"), default="none", help="forward under bf16 autocast")
    ap.add_argument("--batch", type=int, default=None, help="batch size for every model (default: per model)")
    ap.add_argument("--reference", action="store_true", help="also time IVON's per-parameter reference path")
    ap.add_argument("--floor", action="store_true", help="also time the pieces that bound IVON's step")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODELS]
    if bad:
        ap.error(f"unknown model(s) {bad}; allowed: {', '.join(MODELS)}")
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"torch {torch.__version__}, {args.device}, threads {torch.get_num_threads()}, autocast {args.autocast}, "
          f"{args.repeats} interleaved repeats, {args.clock} clock")  # fmt: skip
    print(f"{'model':<12}{'optimizer':<10}{'median ms':>11}{'ratio/AdamW':>13}")
    for name in models:
        res = bench_model(name, args, clock)
        pieces = res.pop("floor", None)
        for k, v in res.items():
            print(f"{name:<12}{k:<10}{v['ms']:>11.3f}{v['ratio']:>13.3f}", flush=True)
        if pieces:
            print(f"{name:<10}floor (median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in pieces.items()))
            lo = (pieces["fwd+bwd"] + pieces["draw"]) / (pieces["fwd+bwd"] + pieces["adamw step"])
            print(f"{name:<10}(fwd+bwd + draw) / (fwd+bwd + AdamW step) = {lo:.3f}", flush=True)


if __name__ == "__main__":
    main()
