"""varsmooth.io: append_jsonl is a real append (one O_APPEND write per line), never a read-modify-write."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from varsmooth.io import append_jsonl

ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def test_append_jsonl_appends_and_never_rewrites(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_jsonl(path, {"epoch": 1})
    inode = path.stat().st_ino
    code = textwrap.dedent(
        f"""
        from varsmooth.io import append_jsonl
        for i in range(200):
            append_jsonl({str(path)!r}, {{"epoch": i, "writer": __import__("os").getpid()}})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], env=ENV) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert path.stat().st_ino == inode and len(lines) == 401  # no line lost or repeated, the same file
    for p in procs:
        assert [r["epoch"] for r in lines if r.get("writer") == p.pid] == list(range(200))
