"""`varsmooth run` sweeps end to end: diverging runs recorded and the rest finished (exit 1), two concurrent runs on
one folder (one gets the lock error), and kill -9 at random points then a re-run equal to an uninterrupted sweep.

Concurrent and killed runs are `varsmooth.cli.main` in forked processes (a fork starts in milliseconds, so the kill
points land inside the sweep rather than in Python's start-up). ``VARSMOOTH_TEST_KILLS`` sets the number of kills
(default 5; the check was also run with 20).
"""

import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

from varsmooth.cli import main
from varsmooth.io import read_csv, read_json
from varsmooth.report.html import write_report

FORK = multiprocessing.get_context("fork")
# 5 runs (ERM, LS x2, SAM, IVON) of 3 epochs on the bundled digits
TINY = ["run", "noisy-accuracy", "--preset", "smoke", "--seeds", "0", "--set", "corruptions=[symmetric:0.4]",
        "--set", "alphas=[0.0,0.5]", "--set", "rhos=[0.05]", "--set", "ess_factors=[1.0]", "--set", "epochs=3",
        "--no-progress"]  # fmt: skip
# 12 runs (2 seeds x ERM, LS x2, SAM x2, IVON) of 1 epoch; SAM at rho 1e30 diverges (NaN loss) on both seeds
DIVERGING = ["run", "noisy-accuracy", "--preset", "smoke", "--seeds", "0", "1", "--set", "corruptions=[symmetric:0.4]",
             "--set", "alphas=[0.0,0.5]", "--set", "rhos=[0.05,1.0e+30]", "--set", "ess_factors=[1.0]",
             "--set", "epochs=1", "--no-progress"]  # fmt: skip


def _child(argv, err_file, go):
    if go is not None:
        go.wait()
    with open(os.devnull, "w") as sys.stdout, open(err_file, "w") as sys.stderr:
        code = main(argv)
    os._exit(code)


def _start(argv, err_file, go=None):
    proc = FORK.Process(target=_child, args=(argv, str(err_file), go))
    proc.start()
    return proc


def _run(argv, err_file) -> int:
    proc = _start(argv, err_file)
    proc.join(120)
    return proc.exitcode


def _metrics(out: Path) -> dict:
    """Every run's final metrics (result.json) without wall times."""
    return {p.parent.name: {k: v for k, v in read_json(p)["metrics"].items() if k != "time_s"}
            for p in sorted((out / "runs").glob("*/result.json"))}  # fmt: skip


def _same_results(a: Path, b: Path) -> None:
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    assert _metrics(a) == _metrics(b) and len(_metrics(a)) == 5
    sa, sb = read_json(a / "summary.json"), read_json(b / "summary.json")
    assert sa["table"] == sb["table"] and sa["claims"] == sb["claims"]


def _tree(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_two_diverging_of_twelve_recorded_the_rest_finished_exit_1(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert main([*DIVERGING, "--out", str(out)]) == 1
    captured = capsys.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert err == [f"varsmooth: error: 2 of 12 runs failed (see {out / 'summary.json'})"]
    assert "FAILED: 2 of 12 runs" in captured.out  # the terminal summary says so
    summary = read_json(out / "summary.json")
    assert (summary["runs_finished"], summary["runs_failed"], summary["runs_total"]) == (10, 2, 12)
    assert [(f["tags"]["method"], f["tags"]["rho"], f["tags"]["seed"]) for f in summary["failures"]] == [
        ("sam", 1e30, 0), ("sam", 1e30, 1)]  # fmt: skip
    for f in summary["failures"]:
        assert f["reason"].startswith("TrainingDiverged: training diverged at epoch 1") and "\n" not in f["reason"]
        assert f["last_good_epoch"] == 0 and f["attempts"] == 1
        assert "Traceback" in read_json(out / f["file"])["traceback"]
    # selection ignores the failed runs and says so
    assert all(r["chosen"] == "rho=0.05" for r in summary["table"] if r["method"] == "best SAM")
    assert "left out of hyperparameter selection" in summary["selection_note"]
    failed_rows = [r for r in read_csv(out / "results.csv") if r["metric"] == "failed"]
    assert [(r["rho"], r["seed"]) for r in failed_rows] == [("1e+30", "0"), ("1e+30", "1")]
    page = write_report(out).read_text()
    assert "Failed runs" in page and "sam_rho1e+30_s1" in page
    # a re-run trains nothing: the 10 finished and the 2 recorded failures are all skipped
    calls = []
    import varsmooth.experiments.comparison as compare

    real = compare.compare_run
    monkeypatch.setattr(compare, "compare_run", lambda cfg, run_dir, **kw: calls.append(cfg["name"]) or real(
        cfg, run_dir, **kw))  # fmt: skip
    before = _tree(out / "runs")
    assert main([*DIVERGING, "--out", str(out)]) == 1 and calls == []
    assert _tree(out / "runs") == before
    # --retry-failed runs exactly the 2 again (they diverge again: attempts 2)
    assert main([*DIVERGING, "--retry-failed", "--out", str(out)]) == 1
    assert sorted(calls) == sorted(f["name"] for f in summary["failures"])
    assert [f["attempts"] for f in read_json(out / "summary.json")["failures"]] == [2, 2]


def test_two_concurrent_runs_on_one_folder(tmp_path):
    lone = tmp_path / "lone"
    assert main([*TINY, "--out", str(lone)]) == 0
    out = tmp_path / "out"
    go = FORK.Event()
    procs = [_start([*TINY, "--out", str(out)], tmp_path / f"{k}.err", go) for k in range(2)]
    go.set()  # both call main at once
    for p in procs:
        p.join(120)
    codes = [p.exitcode for p in procs]
    assert sorted(codes) == [0, 2], codes
    winner, loser = (procs[0], 1) if codes[0] == 0 else (procs[1], 0)
    err = (tmp_path / f"{loser}.err").read_text().splitlines()
    assert len(err) == 1 and err[0].startswith(f"varsmooth: error: results folder {str(out)!r} is in use"), err
    assert f"pid {winner.pid} on host " in err[0]
    _same_results(out, lone)
    assert read_json(out / "config.json") == read_json(lone / "config.json")


def test_kill9_at_random_points_then_rerun_equals_uninterrupted(tmp_path):
    lone = tmp_path / "lone"
    assert main([*TINY, "--out", str(lone)]) == 0  # in this process: later forks start with everything imported
    t0 = time.perf_counter()
    assert _run([*TINY, "--out", str(tmp_path / "probe")], tmp_path / "probe.err") == 0
    duration = time.perf_counter() - t0  # of a whole sweep in a forked process
    _same_results(tmp_path / "probe", lone)
    out, rng, hits = tmp_path / "out", random.Random(0), 0
    kills = int(os.environ.get("VARSMOOTH_TEST_KILLS", "5"))
    for k in range(kills):
        proc = _start([*TINY, "--out", str(out)], tmp_path / f"kill{k}.err")
        time.sleep(0.3 * duration * rng.random() ** 2)  # mostly short: each resumed sweep gets a little further
        if proc.is_alive():
            os.kill(proc.pid, signal.SIGKILL)
            hits += 1
        proc.join(120)
        err = (tmp_path / f"kill{k}.err").read_text()
        assert proc.exitcode in (0, -signal.SIGKILL) and "Traceback" not in err, err
    assert hits >= 1
    assert _run([*TINY, "--out", str(out)], tmp_path / "rerun.err") == 0
    _same_results(out, lone)
    for metrics in (out / "runs").glob("*/metrics.jsonl"):  # every epoch exactly once
        assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    assert [p for p in out.rglob("*.tmp")] == []
    print(f"{hits} of {kills} kills hit a running sweep", file=sys.stderr)

