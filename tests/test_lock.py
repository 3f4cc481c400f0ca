"""varsmooth.lock: one process per folder, the holder named in one line, stale locks of killed processes taken
over, reentrant within a process, orphaned temporary files removed."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from varsmooth import io as vio
from varsmooth.errors import InputError
from varsmooth.lock import hold, holder, is_held

SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}

HOLDER = textwrap.dedent(
    """
    import sys, time
    from varsmooth.lock import hold
    with hold(sys.argv[1], what="run folder"):
        print("held", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def other_process(tmp_path):
    """Start a process that holds ``tmp_path / "run"``; yields it (killed at the end)."""
    folder = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert proc.stdout.readline().strip() == "held"
        yield folder, proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _held_elsewhere(folder: Path) -> bool:
    code = f"from varsmooth.lock import is_held; print(is_held({str(folder)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, check=True)
    return out.stdout.strip() == "True"


def test_second_process_gets_one_line_naming_the_holder(other_process):
    folder, proc = other_process
    with pytest.raises(InputError) as err:
        with hold(folder, what="run folder"):
            pytest.fail("took a lock another process holds")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"run folder {str(folder)!r} is in use")
    assert f"pid {proc.pid} on host {socket.gethostname()}, started 20" in msg
    assert is_held(folder) and (folder / ".lock").exists()  # the holder's lock file is left alone


def test_stale_lock_of_a_killed_process_is_taken_over(other_process):
    folder, proc = other_process
    stale = holder(folder)
    assert f"pid {proc.pid}" in stale
    proc.send_signal(signal.SIGKILL)  # kill -9: no clean-up ran; the lock file still names the dead holder
    proc.wait(timeout=30)
    assert holder(folder) == stale and not is_held(folder)
    with hold(folder):
        assert holder(folder).startswith(f"pid {os.getpid()} on host ")
        assert _held_elsewhere(folder)


def test_reentrant_within_a_process(tmp_path):
    with hold(tmp_path) as f:
        with hold(f):
            (f / "result.json").write_text("{}")
        assert _held_elsewhere(tmp_path)  # the inner release kept the outer hold
    assert not _held_elsewhere(tmp_path)


def test_bad_input_inside_leaves_the_folder_as_it_was(tmp_path):
    fresh = tmp_path / "fresh"
    with pytest.raises(InputError):
        with hold(fresh):
            raise InputError("bad value")
    assert not fresh.exists()
    old = tmp_path / "old"
    old.mkdir()
    (old / ".lock").write_text("pid 1 on host h, started 2020-01-01T00:00:00+00:00\n")
    with pytest.raises(InputError):
        with hold(old):
            raise InputError("bad value")
    assert (old / ".lock").read_text() == "pid 1 on host h, started 2020-01-01T00:00:00+00:00\n"
    with hold(fresh):  # nothing written inside: nothing left behind
        pass
    assert not fresh.exists()


def test_orphaned_temporary_files_are_removed_except_where_another_process_holds(other_process, tmp_path):
    held, _ = other_process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    tag = f"{vio._HOST}.{int(dead.stdout)}"  # atomic_open's temporary names carry the writer's host and pid
    (held / f".checkpoint.pt.{tag}.abc.tmp").write_bytes(b"half")
    sub = tmp_path / "runs" / "a"
    sub.mkdir(parents=True)
    for f in (tmp_path / f".results.csv.{tag}.x1.tmp", sub / f".final.json.{tag}.x2.tmp"):
        f.write_text("half")
    (sub / "keep.tmp").write_text("not ours")  # only atomic_open's hidden .NAME.HOST.PID.*.tmp files go
    with hold(tmp_path):
        pass
    assert sorted(p.name for p in tmp_path.rglob("*.tmp")) == [f".checkpoint.pt.{tag}.abc.tmp", "keep.tmp"]



def test_varsmooth_train_on_a_held_folder_is_one_line_exit_2(other_process, capsys):
    from varsmooth import cli

    folder, proc = other_process
    before = sorted(p.name for p in folder.iterdir())
    argv = ["train", "--dataset", "digits", "--model", "logreg", "--epochs", "1", "--no-progress", "--device", "cpu",
            "--out", str(folder)]  # fmt: skip
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"varsmooth: error: run folder {str(folder)!r} is in use"), err
    assert f"pid {proc.pid}" in err[0]
    assert sorted(p.name for p in folder.iterdir()) == before == [".lock"]  # nothing written


def _open_files() -> list[str]:
    """The paths this process has open (Linux /proc)."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the descriptor of the listing itself, closed by now
            pass
    return paths


def test_a_failed_holder_write_closes_the_lock(tmp_path, monkeypatch):
    """A full disk while recording the holder: the error goes up, the file is put back and no descriptor leaks
    (a leaked one kept the lock, and the tmpfs of the disk-full test, busy)."""
    import errno

    import varsmooth.lock as lock

    def full(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    folder = tmp_path / "new" / "run"
    monkeypatch.setattr(lock, "_write", full)
    with pytest.raises(OSError, match="No space left"):
        with hold(folder):
            pass
    assert not [f for f in _open_files() if str(tmp_path) in f]
    assert not (tmp_path / "new").exists()  # the folders it made are gone with the lock file
    monkeypatch.undo()
    with hold(folder):  # it can be taken again, and it works
        assert _held_elsewhere(folder)
