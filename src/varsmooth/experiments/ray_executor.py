"""A sweep's runs as Ray tasks (``varsmooth run ... --executor ray``): one task per unfinished run configuration.

*Why tasks, not Tune trials.* A sweep here is a fixed list of configurations, each with its own run folder that
already holds everything Tune would add: the checkpoint a retried run resumes from, ``result.json``, the failure
record, and the selection of hyperparameters (done afterwards by the experiment, under its own protocols). A Ray
task with ``max_retries`` is the smallest thing that gives what is missing -- scheduling by CPU and (fractional)
GPU across nodes, and a fresh attempt when a worker or node dies -- without a second results store to keep in step.

*The cluster* is the one ``RAY_ADDRESS`` names (Ray's convention; ``host:port`` of the head's GCS, or ``auto``);
with nothing set, ``ray.init()`` connects to a cluster already running on this machine or starts a local one.
An address that does not answer within :data:`CONNECT_TIMEOUT_S` is bad input (one line naming it), not a hang.

*Resources.* Each task asks for ``gpus_per_run`` GPUs (a fraction shares a card: 0.5 puts two runs on one GPU)
and ``cpus_per_run`` CPUs; Ray sets ``CUDA_VISIBLE_DEVICES`` to the GPUs it gives, so a run's ``cuda`` device is
its share, and a run given no GPU sees none (``CUDA_VISIBLE_DEVICES=""``). Torch uses ``cpus_per_run`` threads.
A GPU task gets a fresh worker process (``max_calls=1``): CUDA binds a process to the devices it saw first.

*Storage.* Run folders live under the sweep's output folder, which every node must see (a shared file system).
:func:`check_cluster` writes a marker file there and runs a task on every node that reads it back; a node that
cannot is bad input naming the folder.

*Faults.* A worker killed mid-run (``kill -9``, a lost node) is retried by Ray up to ``max_retries`` times; the
retry finds the run's folder with its last checkpoint and resumes from it (the folder's lock died with the killed
worker: a flock is released by the kernel). A run whose attempts all die is recorded as failed, like a diverging
run, and the others go on.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import InputError, os_error_message
from ..lock import is_held

CONNECT_TIMEOUT_S = 10.0  # seconds to wait for the cluster at RAY_ADDRESS to answer
CHECK_TIMEOUT_S = 300.0  # seconds for every node to run the storage check (a node may start a worker first)
LOCK_WAIT_S = 60.0  # a retried run waits this long for a killed attempt's worker to exit and free its folder
MAX_RETRIES = 3  # attempts of a run after its worker or node died, beyond the first
INSTALL_HINT = "pip install 'varsmooth[ray]'"

_checked: set[tuple[str, str, float, int]] = set()  # (cluster, folder, gpus, cpus) checked in this connection


def import_ray():
    """The ``ray`` module, or InputError naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise InputError(f"--executor ray needs Ray, which is not installed; install it with {INSTALL_HINT}") from None
    return ray


def check_options(gpus_per_run: Any, cpus_per_run: Any) -> None:
    """InputError unless ``gpus_per_run`` is a finite number >= 0 (whole above 1, as Ray requires) and
    ``cpus_per_run`` an integer >= 1."""
    ok = isinstance(gpus_per_run, int | float) and not isinstance(gpus_per_run, bool) and math.isfinite(gpus_per_run)
    if not ok or gpus_per_run < 0:
        raise InputError(f"--gpus-per-run {gpus_per_run!r} is not allowed; give a number >= 0 (0.5: two runs a GPU)")
    if gpus_per_run > 1 and gpus_per_run != int(gpus_per_run):
        raise InputError(f"--gpus-per-run {gpus_per_run!r} is not allowed; above 1 give a whole number of GPUs")
    if not isinstance(cpus_per_run, int) or isinstance(cpus_per_run, bool) or cpus_per_run < 1:
        raise InputError(f"--cpus-per-run {cpus_per_run!r} is not allowed; give an integer >= 1")


def _address() -> str | None:
    return os.environ.get("RAY_ADDRESS") or None


def _probe(address: str, timeout: float) -> None:
    """InputError unless something accepts a TCP connection at ``address`` (``[ray://]host:port``) in time."""
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"RAY_ADDRESS={address!r} is not an address; give host:port of the Ray head (or unset it)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as err:
        why = "no answer" if isinstance(err, TimeoutError) else (err.strerror or type(err).__name__)
        raise InputError(f"cannot reach the Ray cluster at RAY_ADDRESS={address} ({why} within {timeout:g} s); "
                         "start it (ray start --head) or fix RAY_ADDRESS") from None  # fmt: skip


def _first_line(err: BaseException) -> str:
    return next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)


@contextlib.contextmanager
def cluster(*, connect_timeout: float = CONNECT_TIMEOUT_S) -> Iterator[Any]:
    """Connect to Ray for the block (yields the ``ray`` module); disconnect at the end when this call connected.
    An existing connection (``ray.init`` called before) is used as it is."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    address = _address()
    if address not in (None, "auto", "local"):
        _probe(address, connect_timeout)
    try:
        ray.init(address=address, log_to_driver=False, logging_level="warning")
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as err:
        where = f"at RAY_ADDRESS={address}" if address else "on this machine"
        raise InputError(f"cannot connect to the Ray cluster {where}: {_first_line(err)}") from None
    try:
        yield ray
    finally:
        _checked.clear()
        ray.shutdown()


@contextlib.contextmanager
def checked_cluster(out: str | Path, *, gpus_per_run: float, cpus_per_run: int) -> Iterator[Any]:
    """:func:`cluster` with the options and the cluster checked for ``out`` (:func:`check_options`,
    :func:`check_cluster`) before the block; yields the ``ray`` module."""
    check_options(gpus_per_run, cpus_per_run)
    with cluster() as ray:
        check_cluster(ray, out, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run)
        yield ray


def _nodes(ray) -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def check_cluster(ray, out: str | Path, *, gpus_per_run: float, cpus_per_run: int) -> None:
    """InputError unless some node of the cluster can run one run (``gpus_per_run``, ``cpus_per_run``) and every
    node sees the folder ``out`` (a marker file written here, read back by a task on each node). Leaves nothing."""
    out = Path(out).absolute()
    key = (str(ray.get_runtime_context().gcs_address), str(out), float(gpus_per_run), int(cpus_per_run))
    if key in _checked:
        return
    nodes = _nodes(ray)
    most = {r: max((n["Resources"].get(r, 0.0) for n in nodes), default=0.0) for r in ("GPU", "CPU")}
    for flag, want, res in (("--gpus-per-run", gpus_per_run, "GPU"), ("--cpus-per-run", cpus_per_run, "CPU")):
        if want > most[res]:
            raise InputError(f"{flag} {want:g} is more than the largest node of the Ray cluster has "
                             f"({most[res]:g} {res}s); give at most {most[res]:g}")  # fmt: skip
    created = [d for d in (out, *out.parents) if not d.exists()]
    token = uuid.uuid4().hex
    marker = out / f".varsmooth-visible-{token}"
    try:
        out.mkdir(parents=True, exist_ok=True)
        marker.write_text(token, encoding="utf-8")
        blind = _blind_nodes(ray, nodes, marker, token)
    except OSError as err:
        raise InputError(os_error_message(err)) from None
    finally:
        marker.unlink(missing_ok=True)
        for d in created:  # deepest first
            with contextlib.suppress(OSError):
                d.rmdir()
    if blind:
        shown = ", ".join(blind[:3]) + (", ..." if len(blind) > 3 else "")
        raise InputError(f"--out {str(out)!r} is not visible from {len(blind)} of {len(nodes)} Ray nodes ({shown}); "
                         "put it on a file system that every node mounts at the same path")  # fmt: skip
    _checked.add(key)


def _sees(path: str, token: str) -> bool:
    """On a node: whether ``path`` holds ``token``."""
    try:
        return Path(path).read_text(encoding="utf-8") == token
    except (OSError, UnicodeDecodeError):
        return False


def _blind_nodes(ray, nodes: list[dict[str, Any]], marker: Path, token: str) -> list[str]:
    """The addresses of the nodes on which a task cannot read ``marker``."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sees = ray.remote(_sees)
    refs = [sees.options(num_cpus=0, max_retries=0,
                         scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
                str(marker), token) for n in nodes]  # fmt: skip
    try:
        answers = ray.get(refs, timeout=CHECK_TIMEOUT_S)
    except ray.exceptions.GetTimeoutError:
        raise InputError(f"the Ray nodes did not answer the check of --out {str(marker.parent)!r} within "
                         f"{CHECK_TIMEOUT_S:g} s; see `ray status`") from None  # fmt: skip
    return [f"{n['NodeManagerAddress']} ({n['NodeID'][:8]})" for n, ok in zip(nodes, answers, strict=True) if not ok]


def _task(run_one: Callable, run_fn: Any, cfg: dict, out: str, threads: int) -> dict[str, Any]:
    """On a worker: one run by ``run_one`` (the sweep's), after waiting for a killed attempt to free its folder.
    ``{"metrics": ...}`` (None: failed and recorded) or ``{"error": one line}`` for bad input or an OS error."""
    run_dir = Path(out) / "runs" / cfg["name"]
    deadline = time.monotonic() + LOCK_WAIT_S
    while time.monotonic() < deadline and is_held(run_dir):
        time.sleep(0.2)
    try:
        return {"metrics": run_one(run_fn, cfg, out, threads)}
    except InputError as err:
        return {"error": str(err)}
    except OSError as err:
        return {"error": f"on Ray node {socket.gethostname()}: {os_error_message(err)}"}


def run_tasks(
    run_one: Callable,
    run_fn: str,
    todo: Sequence[dict],
    out: str | Path,
    *,
    gpus_per_run: float,
    cpus_per_run: int,
    max_retries: int | None = None,
) -> Iterator[tuple[dict, dict | None | BaseException]]:
    """Run ``run_one(run_fn, cfg, out, threads)`` for each config of ``todo`` as a Ray task; yields ``(config,
    metrics | None | the error that ended every attempt)`` as runs finish. Needs a connection (:func:`cluster`).
    Raises InputError for a run's bad input or OS error, after cancelling the rest; cancels them on any exit."""
    ray = import_ray()
    out = str(Path(out).absolute())
    max_retries = MAX_RETRIES if max_retries is None else max_retries
    options: dict[str, Any] = {"num_cpus": cpus_per_run, "num_gpus": gpus_per_run, "max_retries": max_retries,
                               "retry_exceptions": False}  # fmt: skip
    if gpus_per_run:
        options["max_calls"] = 1  # a fresh worker per run (settable in ray.remote only, not in .options)
    else:
        options["runtime_env"] = {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}
    task = ray.remote(**options)(_task)
    pending = {task.remote(run_one, run_fn, cfg, out, cpus_per_run): cfg for cfg in todo}
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                cfg = pending.pop(ref)
                try:
                    answer = ray.get(ref)
                except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.OutOfMemoryError, ray.exceptions.TaskUnschedulableError) as err:  # fmt: skip
                    yield cfg, err
                    continue
                if "error" in answer:
                    raise InputError(answer["error"])
                yield cfg, answer["metrics"]
    finally:
        for ref in pending:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
