"""Run CLI cases that could exhaust memory or hang, in this one process, under a memory limit and a per-case alarm.

``python tests/_guarded_cli.py CASES.json LIMIT_GIB`` with CASES.json a list of ``{"argv": [...], "cwd": dir}``;
prints one JSON list of ``{"rc": int | None, "err": str}``: ``rc`` None and ``err`` naming MemoryError or a hang
when the case broke the guard. The limit (``RLIMIT_AS``) makes a regression that allocates without bound fail the
test with a MemoryError instead of taking the machine down; the alarm makes a hang fail it instead of blocking CI.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import resource
import signal
import sys

SECONDS_PER_CASE = 60


class _Hang(Exception):
    pass


def _alarm(signum, frame):
    raise _Hang


def main() -> None:
    cases = json.loads(open(sys.argv[1], encoding="utf-8").read())
    limit = int(float(sys.argv[2]) * (1 << 30))
    import torch  # before the limit: its import maps large libraries once

    torch.set_num_threads(1)
    from varsmooth import cli

    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGALRM, _alarm)
    results = []
    for case in cases:
        os.chdir(case["cwd"])
        err = io.StringIO()
        signal.alarm(SECONDS_PER_CASE)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                try:
                    rc = cli.main(case["argv"])
                except SystemExit as stop:
                    rc = stop.code
        except MemoryError:
            rc, err = None, io.StringIO("MemoryError: the case exceeded the memory guard")
        except _Hang:
            rc, err = None, io.StringIO(f"hang: no answer in {SECONDS_PER_CASE} s")
        except Exception as exc:  # a traceback the CLI let through
            rc, err = None, io.StringIO(f"Traceback: {type(exc).__name__}: {exc}")
        finally:
            signal.alarm(0)
        results.append({"rc": rc, "err": err.getvalue()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
