"""A toy run function for the sweep tests (importable by spawned worker processes)."""

import json
from pathlib import Path


def toy_run(cfg: dict, run_dir: Path) -> dict:
    """Counts its calls in ``calls.txt``; fails once if ``fail_once`` and no ``failed`` marker exists; fails every
    time if ``fail_always`` (a deterministic failure, like a diverging configuration), after writing
    ``metrics.jsonl`` lines for ``fail_always`` epochs (the epochs it got through)."""
    run_dir = Path(run_dir)
    calls = run_dir / "calls.txt"
    calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
    if cfg.get("fail_once") and not (run_dir / "failed").exists():
        (run_dir / "failed").write_text("1")
        raise RuntimeError("simulated crash")
    if cfg.get("fail_always"):
        lines = [json.dumps({"epoch": e + 1}) + "\n" for e in range(int(cfg["fail_always"]))]
        (run_dir / "metrics.jsonl").write_text("".join(lines))
        raise FloatingPointError(f"loss = nan at x={cfg['x']}\nsecond line of the message")
    return {"square": cfg["x"] ** 2, "echo": json.dumps(cfg["x"])}


def step_run(cfg: dict, run_dir: Path) -> dict:
    """A run of ``cfg["steps"]`` steps of ``cfg["step_s"]`` seconds that checkpoints after each step
    (``checkpoint.json``) and resumes from it, as the engine does. Appends each attempt's pid and the step it
    started from to ``attempts.txt`` (``pid step``) and each step to ``steps.txt``; the result depends only on
    ``cfg``."""
    import os
    import time

    run_dir = Path(run_dir)
    ckpt = run_dir / "checkpoint.json"
    state = json.loads(ckpt.read_text()) if ckpt.exists() else {"step": 0, "value": cfg["x"]}
    with open(run_dir / "attempts.txt", "a") as f:
        f.write(f"{os.getpid()} {state['step']}\n")
    while state["step"] < cfg["steps"]:
        time.sleep(cfg.get("step_s", 0.0))
        state = {"step": state["step"] + 1, "value": (state["value"] * 31 + 7) % 1_000_003}
        tmp = run_dir / "checkpoint.json.part"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, ckpt)
        with open(run_dir / "steps.txt", "a") as f:
            f.write(f"{state['step']}\n")
    return {"value": state["value"], "steps": state["step"]}


def dying_run(cfg: dict, run_dir: Path) -> dict:
    """Kills its own process (SIGKILL, like a lost node) when ``cfg["die"]``, after counting the attempt in
    ``calls.txt``; else :func:`toy_run`."""
    import os
    import signal

    if cfg.get("die"):
        calls = Path(run_dir) / "calls.txt"
        calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
        os.kill(os.getpid(), signal.SIGKILL)
    return toy_run(cfg, run_dir)


def env_run(cfg: dict, run_dir: Path) -> dict:
    """What the run's process sees: torch's thread count and ``CUDA_VISIBLE_DEVICES``."""
    import os

    import torch

    return {"threads": torch.get_num_threads(), "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
