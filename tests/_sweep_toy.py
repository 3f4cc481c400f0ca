"""A toy run function for the sweep tests (importable by spawned worker processes)."""

import json
from pathlib import Path


def toy_run(cfg: dict, run_dir: Path) -> dict:
    """Counts its calls in ``calls.txt``; fails once if ``fail_once`` and no ``failed`` marker exists."""
    run_dir = Path(run_dir)
    calls = run_dir / "calls.txt"
    calls.write_text(str(int(calls.read_text()) + 1 if calls.exists() else 1))
    if cfg.get("fail_once") and not (run_dir / "failed").exists():
        (run_dir / "failed").write_text("1")
        raise RuntimeError("simulated crash")
    return {"square": cfg["x"] ** 2, "echo": json.dumps(cfg["x"])}
