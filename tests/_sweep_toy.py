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
