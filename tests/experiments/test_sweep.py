from pathlib import Path

import pytest

from varsmooth.errors import InputError
from varsmooth.experiments.sweep import failed_runs, parse_shard, run_sweep
from varsmooth.io import read_json

RUN = "_sweep_toy:toy_run"


def _configs(n=5, fail_at=None):
    return [{"name": f"x{x}", "x": x, "fail_once": x == fail_at} for x in range(n)]


def _calls(out: Path, name: str) -> int:
    return int((out / "runs" / name / "calls.txt").read_text())


def test_runs_each_config_once_and_skips_finished(tmp_path):
    results = run_sweep(_configs(), tmp_path, RUN, progress=False)
    assert [m["square"] for _, m in results] == [0, 1, 4, 9, 16]
    again = run_sweep(_configs(), tmp_path, RUN, progress=False)
    assert again == results
    assert all(_calls(tmp_path, f"x{x}") == 1 for x in range(5))


def test_changed_config_reruns(tmp_path):
    run_sweep(_configs(2), tmp_path, RUN, progress=False)
    cfgs = _configs(2)
    cfgs[1]["x"] = 7
    results = run_sweep(cfgs, tmp_path, RUN, progress=False)
    assert results[1][1]["square"] == 49
    assert _calls(tmp_path, "x0") == 1 and _calls(tmp_path, "x1") == 2


def test_failed_run_is_recorded_skipped_then_retried(tmp_path):
    clean = run_sweep(_configs(), tmp_path / "clean", RUN, progress=False)
    crash = tmp_path / "crash"
    first = run_sweep(_configs(fail_at=3), crash, RUN, progress=False)
    assert [m is None for _, m in first] == [False, False, False, True, False]  # x4 ran after x3 failed
    rec = read_json(crash / "runs" / "x3" / "failure.json")
    assert rec["reason"] == "RuntimeError: simulated crash" and rec["attempts"] == 1
    assert rec["last_good_epoch"] == 0 and "toy_run" in rec["traceback"]
    assert [f["name"] for f in failed_runs(_configs(fail_at=3), crash)] == ["x3"]
    again = run_sweep(_configs(fail_at=3), crash, RUN, progress=False)  # a recorded failure is not retried
    assert again == first and _calls(crash, "x3") == 1
    resumed = run_sweep(_configs(fail_at=3), crash, RUN, progress=False, retry_failed=True)
    assert [m for _, m in resumed] == [m for _, m in clean]
    assert _calls(crash, "x0") == 1 and _calls(crash, "x3") == 2
    assert not (crash / "runs" / "x3" / "failure.json").exists() and failed_runs(_configs(), crash) == []


def test_shards_cover_the_sweep_once(tmp_path):
    for i in range(3):
        partial = run_sweep(_configs(), tmp_path, RUN, shard=(i, 3), progress=False)
        assert all((m is not None) == (k % 3 <= i) for k, (_, m) in enumerate(partial))
    assert all(_calls(tmp_path, f"x{x}") == 1 for x in range(5))


def test_parallel_jobs_match_serial(tmp_path):
    serial = run_sweep(_configs(4), tmp_path / "a", RUN, progress=False)
    parallel = run_sweep(_configs(4), tmp_path / "b", RUN, jobs=2, progress=False)
    assert parallel == serial


@pytest.mark.parametrize("text", ["1", "a/b", "3/3", "-1/2"])
def test_bad_shard(text):
    with pytest.raises(InputError, match="shard"):
        parse_shard(text)


def test_duplicate_names_rejected(tmp_path):
    with pytest.raises(ValueError, match="unique"):
        run_sweep([{"name": "a", "x": 1}, {"name": "a", "x": 2}], tmp_path, RUN, progress=False)


def _diverging(n=12, bad=(4, 9)):
    return [{"name": f"x{x}", "x": x, "fail_always": 2 if x in bad else 0} for x in range(n)]


@pytest.mark.parametrize("jobs", [1, 2])
def test_deterministic_failures_are_recorded_and_the_sweep_goes_on(tmp_path, jobs):
    results = run_sweep(_diverging(), tmp_path, RUN, jobs=jobs, progress=False)
    assert [x for x, (_, m) in enumerate(results) if m is None] == [4, 9]
    assert [m["square"] for _, m in results if m is not None] == [x * x for x in range(12) if x not in (4, 9)]
    failures = failed_runs(_diverging(), tmp_path)
    assert [f["name"] for f in failures] == ["x4", "x9"]
    assert failures[0]["reason"] == "FloatingPointError: loss = nan at x=4"  # one line
    assert failures[0]["last_good_epoch"] == 2 and failures[0]["attempts"] == 1
    assert failures[0]["file"] == "runs/x4/failure.json"
    # a re-run skips all 12 (10 finished, 2 recorded failures)
    again = run_sweep(_diverging(), tmp_path, RUN, jobs=jobs, progress=False)
    assert again == results and all(_calls(tmp_path, f"x{x}") == 1 for x in range(12))
    # --retry-failed runs the 2 again, and only them; they fail again and count their attempts
    run_sweep(_diverging(), tmp_path, RUN, jobs=jobs, progress=False, retry_failed=True)
    assert [_calls(tmp_path, f"x{x}") for x in range(12)] == [2 if x in (4, 9) else 1 for x in range(12)]
    assert [f["attempts"] for f in failed_runs(_diverging(), tmp_path)] == [2, 2]


def test_a_changed_config_is_not_a_recorded_failure(tmp_path):
    run_sweep(_diverging(3, bad=(1,)), tmp_path, RUN, progress=False)
    fixed = _diverging(3, bad=())
    results = run_sweep(fixed, tmp_path, RUN, progress=False)  # the failure was of another config: run it
    assert results[1][1] == {"square": 1, "echo": "1"} and failed_runs(fixed, tmp_path) == []
    assert not (tmp_path / "runs" / "x1" / "failure.json").exists()


def test_bad_input_inside_a_run_stops_the_sweep(tmp_path):
    cfgs = _configs(3)
    cfgs[1]["x"] = "not a number"  # the toy raises TypeError: a recorded failure, not bad input
    run_sweep(cfgs, tmp_path, RUN, progress=False)
    assert [f["error"] for f in failed_runs(cfgs, tmp_path)] == ["TypeError"]

    def bad(cfg, run_dir):
        raise InputError("--data-dir 'x' is not a folder")

    with pytest.raises(InputError, match="not a folder"):
        run_sweep(_configs(2), tmp_path / "b", bad, progress=False)
    assert failed_runs(_configs(2), tmp_path / "b") == []
