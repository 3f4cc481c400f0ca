from pathlib import Path

import pytest

from varsmooth.errors import InputError
from varsmooth.experiments.sweep import parse_shard, run_sweep

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


def test_interrupted_sweep_finishes_like_uninterrupted(tmp_path):
    clean = run_sweep(_configs(), tmp_path / "clean", RUN, progress=False)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sweep(_configs(fail_at=3), tmp_path / "crash", RUN, progress=False)
    assert not (tmp_path / "crash" / "runs" / "x4" / "result.json").exists()
    resumed = run_sweep(_configs(fail_at=3), tmp_path / "crash", RUN, progress=False)
    assert [m for _, m in resumed] == [m for _, m in clean]
    assert _calls(tmp_path / "crash", "x0") == 1 and _calls(tmp_path / "crash", "x3") == 2


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
