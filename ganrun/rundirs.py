"""A run directory is written by one run only: one that already holds a run (finished,
failed, interrupted or still running) is refused before anything is written into it,
and a run in progress holds a lock, so that a second process into its directory is
refused while the first lives.

`GuardRunDirs` (a Hydra callback, hydra.callbacks in configs/hydra/default.yaml) claims
a single run's directory in `on_run_start` and a sweep's in `on_multirun_start`: before
Hydra writes .hydra/ and the log there. The lock (`.ganrun.lock`: pid and host) goes
when the process ends; one whose process is gone is taken over. Continuing a run into
its own directory (`ckpt_path=<dir> hydra.run.dir=<dir>`) is allowed, once no process
holds it.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
from pathlib import Path

from hydra.experimental.callback import Callback as HydraCallback

from ganrun.outputs import CHECKPOINT_FILE, METRICS_FILE

LOCK_FILE = ".ganrun.lock"
# What a run writes into its directory besides Hydra's .hydra/ and ganrun.log.
RUN_FILES = (METRICS_FILE, "checkpoints", "config.yaml", "tb", "samples", "metrics.jsonl")


class DirectoryTaken(BaseException):  # noqa: N818 - not an Exception: Hydra's callbacks
    """A run or sweep directory that holds a run, or that a live process holds (a
    BaseException: Hydra turns a callback's Exception into a warning)."""


def gone(pid: int, host: str | None) -> bool:
    """Whether process `pid` of this machine has ended (a zombie too); on another
    machine (`host`) it cannot be told: no."""
    if host is not None and host != socket.gethostname():
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False
    return state == "Z"


def holder(path: Path) -> tuple[int, str | None] | None:
    """The live process (pid, host) that holds `path`, if any (not this one)."""
    try:
        held = json.loads((path / LOCK_FILE).read_text())
        pid, host = int(held["pid"]), held.get("host")
    except (OSError, ValueError, KeyError, TypeError):  # none, or half written: no holder
        return None
    if pid == os.getpid() and host == socket.gethostname():
        return None
    return None if gone(pid, host) else (pid, host)


def died(saved: dict) -> bool:
    """A metrics.json that says "running" whose process is gone (killed outright)."""
    return (saved.get("status") == "running" and bool(saved.get("pid"))
            and gone(saved["pid"], saved.get("host")))


def what_it_holds(path: Path) -> str | None:
    """"a finished run (generator step 3000)", "a run whose process died (generator step
    1014)", "a run", ...: what a run left in `path`; None when nothing of a run is there."""
    if not any((path / name).exists() for name in RUN_FILES):
        return None
    try:
        saved = json.loads((path / METRICS_FILE).read_text())
        status, step = saved.get("status"), saved.get("g_steps")
    except (OSError, ValueError, AttributeError):
        return "a run"
    if died(saved):
        return f"a run whose process died (generator step {step})"
    return f"a {status} run (generator step {step})" if status else "a run"


def jobs_in(path: Path) -> int:
    """How many job directories a sweep directory holds."""
    if not path.is_dir():
        return 0
    return sum(1 for p in path.iterdir() if p.is_dir() and ((p / ".hydra").is_dir()
                                                            or (p / "metrics.json").is_file()))


def claim(path: Path) -> None:
    """Take `path` for this process: the lock written (replacing one whose process is
    gone), removed when the process ends. Refused while a live process holds it; a
    directory that cannot be made is left to Hydra, whose own attempt says why."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return
    lock = path / LOCK_FILE
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except PermissionError:  # a read-only directory: Hydra says so, in one line
            return
        except FileExistsError:
            taken = holder(path)
            if taken is not None:
                raise DirectoryTaken(in_progress(path, taken)) from None
            lock.unlink(missing_ok=True)  # its process is gone (or it is ours): take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(record)
        atexit.register(release, path)
        return
    raise DirectoryTaken(f"{path}: could not take its lock ({lock}); try again")


def release(path: Path) -> None:
    """Remove this process's lock on `path` (one another process holds is left alone)."""
    lock = path / LOCK_FILE
    try:
        held = json.loads(lock.read_text())
    except (OSError, ValueError):
        return
    if held.get("pid") == os.getpid() and held.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


def in_progress(path: Path, taken: tuple[int, str | None]) -> str:
    pid, host = taken
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return (f"{path}: a run is in progress there (pid {pid}{where}); wait for it to end or stop "
            "it, or give another directory (hydra.run.dir=... / hydra.sweep.dir=...)")


def same_place(a: str | Path | None, b: Path) -> bool:
    if a is None:
        return False
    p = Path(str(a)).expanduser().resolve()
    p = p.parent.parent if p.is_file() else p  # <run>/checkpoints/last.ckpt -> <run>
    return p == b.resolve()


def _refuse_if_held(path: Path) -> None:
    """Refused while a live process holds `path` (before anything else is said of it)."""
    taken = holder(path) if path.is_dir() else None
    if taken is not None:
        raise DirectoryTaken(in_progress(path, taken))


def check_run_dir(run_dir: Path, ckpt_path: str | None) -> None:
    """A single run into `run_dir`: refused where a live process holds it, or where a
    run is already (unless this one continues it: ckpt_path into the same directory)."""
    _refuse_if_held(run_dir)
    held = what_it_holds(run_dir) if run_dir.is_dir() else None
    if held is not None and not same_place(ckpt_path, run_dir):
        on = (f"continue it with ckpt_path={run_dir} (into a new run directory), or give "
              "another hydra.run.dir" if (run_dir / "checkpoints" / CHECKPOINT_FILE).is_file() else
              "it has no checkpoint to continue from: give another hydra.run.dir")
        raise DirectoryTaken(f"hydra.run.dir={run_dir} already holds {held}; ganrun never "
                             f"writes over a run: {on}")
    claim(run_dir)


def check_sweep_dir(sweep_dir: Path, ckpt_path: str | None) -> None:
    """A sweep into `sweep_dir`: refused where a live process holds it, or where it holds
    a sweep's jobs already (unless this sweep continues them: ckpt_path=<sweep_dir>)."""
    _refuse_if_held(sweep_dir)
    jobs = jobs_in(sweep_dir)
    if jobs and not same_place(ckpt_path, sweep_dir):
        raise DirectoryTaken(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep ({jobs} job"
            f"{'s' * (jobs != 1)}); ganrun never writes over one: continue it with "
            f"ckpt_path={sweep_dir} (into a new sweep directory), or give another hydra.sweep.dir")
    claim(sweep_dir)


class GuardRunDirs(HydraCallback):
    """Claims the run's or the sweep's directory before Hydra writes into it."""

    def on_run_start(self, config, **kwargs) -> None:
        check_run_dir(Path(str(config.hydra.run.dir)).absolute(), config.get("ckpt_path"))

    def on_multirun_start(self, config, **kwargs) -> None:
        check_sweep_dir(Path(str(config.hydra.sweep.dir)).absolute(), config.get("ckpt_path"))

    def on_run_end(self, config, **kwargs) -> None:
        release(Path(str(config.hydra.run.dir)).absolute())

    def on_multirun_end(self, config, **kwargs) -> None:
        release(Path(str(config.hydra.sweep.dir)).absolute())
