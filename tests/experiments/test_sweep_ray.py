"""`--executor ray` on a real local Ray cluster (2 CPUs), started once for this module by ``ray.init``.

A smoke sweep through Ray equals ``--jobs 1`` in every result, with one run's worker killed by SIGKILL mid-training
(the real engine); a worker killed mid-run is retried and resumes from its checkpoint (a toy run that records it);
a driver killed mid-sweep and started again redoes no finished run; a diverging run is
recorded and the others finish; bad input (unknown executor, bad ``--gpus-per-run``, an unreachable ``RAY_ADDRESS``,
an ``--out`` the cluster cannot see, Ray not installed) is one line, exit 2, nothing written. Drivers that must die
or see another environment run as subprocesses connected to the module's cluster through ``RAY_ADDRESS``.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from varsmooth.cli import main
from varsmooth.experiments.sweep import run_sweep
from varsmooth.io import read_json

ray = pytest.importorskip("ray")

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"
STEP = "_sweep_toy:step_run"
# 4 runs (ERM, LS, SAM, IVON) of 3 epochs on the bundled digits
TINY = ["run", "noisy-accuracy", "--preset", "smoke", "--seeds", "0", "--set", "corruptions=[symmetric:0.4]",
        "--set", "alphas=[0.5]", "--set", "rhos=[0.05]", "--set", "ess_factors=[1.0]", "--set", "epochs=3",
        "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def address():
    """The GCS address of a local Ray cluster that this process is connected to (workers import src/ and tests/)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        mp.setenv("RAY_AUTH_MODE", "disabled")  # subprocess drivers connect without a token
        mp.setenv("PYTHONPATH", os.pathsep.join([str(SRC), str(TESTS), os.environ.get("PYTHONPATH", "")]))
        mp.delenv("RAY_ADDRESS", raising=False)
        ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
                 log_to_driver=False, logging_level="warning")  # fmt: skip
        try:
            yield ray.get_runtime_context().gcs_address
        finally:
            ray.shutdown()


def _env(**extra) -> dict:
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(TESTS), env.get("PYTHONPATH", "")])
    return {**env, **extra}


def _metrics(out: Path) -> dict:
    """Every run's result.json, metrics without wall times."""
    found = {}
    for p in sorted((out / "runs").glob("*/result.json")):
        saved = read_json(p)
        found[p.parent.name] = (saved["config"], {k: v for k, v in saved["metrics"].items() if k != "time_s"})
    return found


def _steps(n: int, steps: int, step_s: float) -> list[dict]:
    return [{"name": f"x{x}", "x": x, "steps": steps, "step_s": step_s} for x in range(n)]


def _expected(configs: list[dict], tmp_path: Path) -> list:
    """The results of the same configs with the local executor, one process."""
    return run_sweep([{**c, "step_s": 0.0} for c in configs], tmp_path / "local", STEP, progress=False)


def _value(results) -> list:
    return [m for _, m in results]


def _kill_after_first_epoch(run_glob: str, root: Path, killed: list) -> threading.Thread:
    """A thread that SIGKILLs the worker training the run matching ``run_glob`` (the pid in its folder's lock) once
    the run has checkpointed its first epoch and before it finishes."""

    def watch():
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and not killed:
            for run in (root / "runs").glob(run_glob):
                lines = (run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []
                holder = (run / ".lock").read_text() if (run / ".lock").exists() else ""
                if lines and not (run / "result.json").exists() and holder.startswith("pid "):
                    os.kill(int(holder.split()[1]), signal.SIGKILL)
                    killed.append(len(lines))
            time.sleep(0.02)

    thread = threading.Thread(target=watch)
    thread.start()
    return thread


def test_smoke_sweep_through_ray_equals_jobs_1_with_a_worker_killed_mid_run(address, tmp_path, capsys):
    assert main([*TINY, "--jobs", "1", "--out", str(tmp_path / "local")]) == 0
    local_out = capsys.readouterr().out
    killed: list = []
    killer = _kill_after_first_epoch("*_ivon_*", tmp_path / "ray", killed)
    assert main([*TINY, "--executor", "ray", "--out", str(tmp_path / "ray")]) == 0
    killer.join()
    assert killed, "the IVON run finished before its worker could be killed"
    # Ray's driver prints its notice of the dead worker on stdout ("(raylet) A worker died ..."): not varsmooth's
    ray_out = "".join(line for line in capsys.readouterr().out.splitlines(True) if "(raylet)" not in line)
    a, b = _metrics(tmp_path / "local"), _metrics(tmp_path / "ray")
    assert len(a) == 4 and a == b  # every run's config and metrics, bit for bit
    assert (tmp_path / "local" / "results.csv").read_bytes() == (tmp_path / "ray" / "results.csv").read_bytes()
    sa, sb = read_json(tmp_path / "local" / "summary.json"), read_json(tmp_path / "ray" / "summary.json")
    assert sa["table"] == sb["table"] and sa["claims"] == sb["claims"] and sb["runs_finished"] == 4
    wall = re.compile(r", [0-9.]+s\)")  # the header's wall time
    assert wall.sub(")", local_out.replace(str(tmp_path / "local"), "OUT")) == wall.sub(
        ")", ray_out.replace(str(tmp_path / "ray"), "OUT"))  # the same terminal table
    for metrics in (tmp_path / "ray" / "runs").glob("*/metrics.jsonl"):  # every epoch once, the killed run's too
        assert [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()] == [1, 2, 3]
    files = {p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*")}
    assert files == {p.relative_to(tmp_path / "local").as_posix() for p in (tmp_path / "local").rglob("*")}


def test_worker_killed_with_sigkill_is_retried_and_resumes_from_its_checkpoint(address, tmp_path):
    configs = _steps(3, steps=8, step_s=0.25)
    out, killed = tmp_path / "ray", []
    run0 = out / "runs" / "x0"

    def kill_x0_after_two_steps():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                step = json.loads((run0 / "checkpoint.json").read_text())["step"]
                pid = int((run0 / "attempts.txt").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                step = 0
            if step >= 2:
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, step))
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_x0_after_two_steps)
    killer.start()
    results = run_sweep(configs, out, STEP, executor="ray", progress=False)
    killer.join()
    assert len(killed) == 1, "the run ended before it could be killed"
    assert _value(results) == _value(_expected(configs, tmp_path))  # the same results as one local process
    attempts = [line.split() for line in (run0 / "attempts.txt").read_text().splitlines()]
    assert len(attempts) == 2 and attempts[0] == [str(killed[0][0]), "0"]
    assert attempts[1][0] != attempts[0][0] and int(attempts[1][1]) >= killed[0][1]  # resumed, not restarted
    assert not (run0 / "failure.json").exists()
    for c in configs[1:]:  # the others ran once
        assert len((out / "runs" / c["name"] / "attempts.txt").read_text().splitlines()) == 1


DRIVER = """
import json, sys
from varsmooth.experiments.sweep import run_sweep
run_sweep(json.loads(sys.argv[2]), sys.argv[1], "_sweep_toy:step_run", executor="ray", progress=False)
"""


def test_driver_killed_then_restarted_finishes_and_redoes_no_finished_run(address, tmp_path):
    configs = _steps(6, steps=5, step_s=0.3)
    out = tmp_path / "ray"
    cmd = [sys.executable, "-c", DRIVER, str(out), json.dumps(configs)]
    env = _env(RAY_ADDRESS=address)
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and first.poll() is None:
        finished = sorted(p.parent.name for p in (out / "runs").glob("*/result.json"))
        started = [p.parent.name for p in (out / "runs").glob("*/checkpoint.json") if p.parent.name not in finished]
        if len(finished) >= 2 and started:
            break
        time.sleep(0.05)
    assert first.poll() is None, first.stderr.read().decode()
    first.send_signal(signal.SIGKILL)
    first.wait()
    finished = {p.parent.name: p.stat().st_mtime_ns for p in (out / "runs").glob("*/result.json")}
    assert 2 <= len(finished) < 6
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    assert second.returncode == 0, second.stderr
    assert _value(run_sweep(configs, out, STEP, progress=False)) == _value(_expected(configs, tmp_path))
    for name, mtime in finished.items():  # no finished run redone
        assert (out / "runs" / name / "result.json").stat().st_mtime_ns == mtime
        assert len((out / "runs" / name / "attempts.txt").read_text().splitlines()) == 1
    resumed = [c["name"] for c in configs if c["name"] not in finished
               and int((out / "runs" / c["name"] / "attempts.txt").read_text().splitlines()[-1].split()[1]) > 0]
    assert resumed  # the run that was training when the driver died went on from its checkpoint


def test_diverging_run_is_recorded_and_the_others_finish(address, tmp_path, capsys):
    configs = [{"name": f"x{x}", "x": x, "fail_always": 2 if x == 1 else 0} for x in range(4)]
    local = run_sweep(configs, tmp_path / "local", "_sweep_toy:toy_run", progress=False)
    through_ray = run_sweep(configs, tmp_path / "ray", "_sweep_toy:toy_run", executor="ray")
    bar = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert any(line.startswith("sweep: 100%") and "4/4" in line and "failed=1" in line for line in bar), bar
    assert through_ray == local and [m is None for _, m in through_ray] == [False, True, False, False]
    a, b = (read_json(tmp_path / d / "runs" / "x1" / "failure.json") for d in ("local", "ray"))
    assert {k: b[k] for k in ("config", "reason", "error", "last_good_epoch", "attempts")} == {
        k: a[k] for k in ("config", "reason", "error", "last_good_epoch", "attempts")}  # fmt: skip
    assert a["last_good_epoch"] == 2


def test_run_whose_every_attempt_dies_is_recorded_and_the_others_finish(address, tmp_path, monkeypatch):
    from varsmooth.experiments import ray_executor

    monkeypatch.setattr(ray_executor, "MAX_RETRIES", 1)
    configs = [{"name": f"x{x}", "x": x, "die": x == 2} for x in range(4)]
    results = run_sweep(configs, tmp_path, "_sweep_toy:dying_run", executor="ray", progress=False)
    assert [m and m["square"] for _, m in results] == [0, 1, None, 9]
    assert (tmp_path / "runs" / "x2" / "calls.txt").read_text() == "2"  # the first attempt and one retry
    rec = read_json(tmp_path / "runs" / "x2" / "failure.json")
    assert rec["config"] == configs[2] and rec["error"] == "WorkerCrashedError" and rec["attempts"] == 1


def test_a_run_gets_cpus_per_run_threads_and_no_gpu_unless_given_one(address, tmp_path):
    results = run_sweep([{"name": "a"}], tmp_path, "_sweep_toy:env_run", executor="ray", cpus_per_run=2,
                        progress=False)  # fmt: skip
    assert results[0][1] == {"threads": 2, "cuda_visible": ""}


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--executor", "dask"], "argument --executor: invalid choice: 'dask'"),
        (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run -1.0 is not allowed"),
        (["--executor", "ray", "--gpus-per-run", "nan"], "--gpus-per-run nan is not allowed"),
        (["--executor", "ray", "--gpus-per-run", "1.5"], "above 1 give a whole number"),
        (["--executor", "ray", "--cpus-per-run", "0"], "--cpus-per-run 0 is not allowed"),
        (["--gpus-per-run", "1"], "--gpus-per-run needs --executor ray"),
        (["--executor", "ray", "--shard", "0/2"], "drop --shard"),
        (["--executor", "ray", "--jobs", "2"], "--jobs 2 is for the local executor"),
        (["--executor", "ray", "--gpus-per-run", "1"], "--gpus-per-run 1 is more than the largest node of the Ray "
                                                       "cluster has (0 GPUs)"),  # fmt: skip
        (["--executor", "ray", "--cpus-per-run", "3"], "--cpus-per-run 3 is more than the largest node"),
    ],
)
def test_bad_input_one_line_exit_2_nothing_written(address, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "dask" in flags else contextlib.nullcontext():
        assert main([*TINY, *flags, "--out", str(out)]) == 2
    assert message in _one_line(capsys.readouterr().err)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_one_line_no_hang(tmp_path):
    bad = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "varsmooth.cli", *TINY, "--executor", "ray", "--out", str(out)],
                          env=_env(RAY_ADDRESS=bad), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert time.monotonic() - t0 < 60
    assert proc.returncode == 2 and proc.stdout == ""
    line = _one_line(proc.stderr)
    assert line.startswith("varsmooth: error: cannot reach the Ray cluster at RAY_ADDRESS=" + bad), line
    assert not out.exists()


def test_without_ray_installed_one_line_names_the_extra(tmp_path):
    code = "import sys; sys.modules['ray'] = None; from varsmooth.cli import main; sys.exit(main(sys.argv[1:]))"
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-c", code, *TINY, "--executor", "ray", "--out", str(out)],
                          env=_env(), capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert "install it with pip install 'varsmooth[ray]'" in _one_line(proc.stderr)
    assert not out.exists()
    # the local executor needs no Ray
    local = ("import sys; sys.modules['ray'] = None; from varsmooth.experiments.sweep import run_sweep; "
             "print(run_sweep([{'name': 'a', 'x': 3}], sys.argv[1], '_sweep_toy:toy_run', jobs=2, progress=False))")
    proc = subprocess.run([sys.executable, "-c", local, str(out)], env=_env(), capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "'square': 9" in proc.stdout, proc.stderr


def _unshare() -> list[str] | None:
    """A command prefix that runs a command in a private mount namespace (root: -m; else a user namespace too)."""
    if shutil.which("unshare") is None:
        return None
    for prefix in (["unshare", "-m"], ["unshare", "-r", "-m"]):
        if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0:
            return prefix
    return None


def test_out_not_visible_to_the_cluster_one_line(address, tmp_path):
    """The driver runs in its own mount namespace where --out is a bind mount of a private folder: the driver
    writes its marker there, the cluster's node (this machine's ordinary view) sees an empty folder."""
    prefix = _unshare()
    if prefix is None:
        pytest.skip("needs unshare with a mount namespace")
    shared, private = tmp_path / "shared", tmp_path / "driver-only"
    shared.mkdir()
    private.mkdir()
    out = shared / "out"
    script = (f'mount --bind "{private}" "{shared}" && exec "{sys.executable}" -m varsmooth.cli '
              + " ".join(f"'{a}'" for a in [*TINY, "--executor", "ray", "--out", str(out)]))  # fmt: skip
    proc = subprocess.run([*prefix, "sh", "-c", script], env=_env(RAY_ADDRESS=address), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    if "mount" in proc.stderr and proc.returncode != 2:
        pytest.skip(f"cannot bind-mount in a mount namespace: {proc.stderr.strip()}")
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    assert line.startswith(f"varsmooth: error: --out {str(out)!r} is not visible from 1 of 1 Ray nodes"), line
    assert list(private.iterdir()) == [] and list(shared.iterdir()) == []  # nothing written, on either side
