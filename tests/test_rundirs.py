"""Nothing written is lost: a run or sweep directory that holds a run is refused before
anything is written into it, a run in progress holds its directory, and a second
evaluation gets a file of its own (test_tools). Run as a user runs them: the console
entry point, its output read for one line and no traceback."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from ganrun.rundirs import LOCK_FILE, DirectoryTaken, check_run_dir, claim, holder, release

from conftest import GANRUN, cli_env

QUICK = ("dataset=ring8", "metrics=none", "log.every=10")


def ganrun(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([GANRUN, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=cli_env())


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def one_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_a_finished_run_is_never_written_over(tmp_path):
    run_dir = tmp_path / "run"
    assert ganrun(*QUICK, "train.steps=20", f"hydra.run.dir={run_dir}", cwd=tmp_path).returncode == 0
    before = snapshot(run_dir)
    assert {"metrics.json", "checkpoints/last.ckpt", "config.yaml", ".hydra/config.yaml"} <= set(before)
    assert LOCK_FILE not in before  # let go when the run ended
    line = one_line(ganrun(*QUICK, "train.steps=40", "seed=3", f"hydra.run.dir={run_dir}",
                           cwd=tmp_path))
    assert line == (f"ganrun: error: hydra.run.dir={run_dir} already holds a finished run "
                    f"(generator step 20); ganrun never writes over a run: continue it with "
                    f"ckpt_path={run_dir} (into a new run directory), or give another "
                    "hydra.run.dir")
    assert snapshot(run_dir) == before  # .hydra/ and ganrun.log included
    # continuing it into its own directory is continuing it, not writing over it (into a
    # new directory: test_readme's test_resume)
    here = ganrun(*QUICK, "train.steps=60", f"ckpt_path={run_dir}", f"hydra.run.dir={run_dir}",
                  cwd=tmp_path)
    assert here.returncode == 0, here.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["g_steps"] == 60


def test_a_run_in_progress_holds_its_directory_until_it_dies(tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen([GANRUN, *QUICK, "train.steps=1000000", "train.ckpt_every=20",
                              f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 240
        while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline:
            time.sleep(0.2)
        assert (run_dir / LOCK_FILE).is_file()
        held = json.loads((run_dir / LOCK_FILE).read_text())
        assert held == {"pid": first.pid, "host": socket.gethostname()}
        # a second process into it, even one that would continue it, is refused
        for extra in ((), (f"ckpt_path={run_dir}",)):
            line = one_line(ganrun(*QUICK, "train.steps=20", *extra, f"hydra.run.dir={run_dir}",
                                   cwd=tmp_path))
            assert line.startswith(f"ganrun: error: {run_dir}: a run is in progress there "
                                   f"(pid {first.pid}); wait for it to end or stop it")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # dead: its directory still holds its run (not written over), and it may be continued
    line = one_line(ganrun(*QUICK, "train.steps=20", f"hydra.run.dir={run_dir}", cwd=tmp_path))
    assert "already holds a run whose process died (generator step" in line
    import torch

    saved_at = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=False)["ganrun"]["g_steps"]  # 20, or later on a busy machine
    resumed = ganrun(*QUICK, f"train.steps={saved_at + 20}", f"ckpt_path={run_dir}",
                     f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["g_steps"] == saved_at + 20


def test_two_runs_started_into_one_directory_at_once(tmp_path):
    run_dir = tmp_path / "run"
    procs = [subprocess.Popen([GANRUN, *QUICK, "train.steps=30", f"seed={k}",
                               f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 1)
    assert "Traceback" not in refused
    assert "a run is in progress there" in refused or "already holds a" in refused, refused
    winner = next(k for k, p in enumerate(procs) if p.returncode == 0)
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["seed"] == winner


def test_a_sweep_directory_that_holds_a_sweep_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    first = ganrun("-m", *QUICK, "train.steps=10", "seed=0,1", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    before = snapshot(sweep)
    line = one_line(ganrun("-m", *QUICK, "train.steps=10", "seed=0,1",
                           f"hydra.sweep.dir={sweep}", cwd=tmp_path))
    assert line == (f"ganrun: error: hydra.sweep.dir={sweep} already holds a sweep (2 jobs); "
                    f"ganrun never writes over one: continue it with ckpt_path={sweep} (into a "
                    "new sweep directory), or give another hydra.sweep.dir")
    assert snapshot(sweep) == before


def test_the_lock(tmp_path):
    """A lock whose process is gone is taken over; a half-written one holds nothing; a
    live process's is respected; release leaves another process's lock alone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname()}))
    assert holder(tmp_path) is None
    claim(tmp_path)
    assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
    release(tmp_path)
    assert not (tmp_path / LOCK_FILE).exists()
    (tmp_path / LOCK_FILE).write_text('{"pid": 12')  # a crash while writing it
    assert holder(tmp_path) is None
    live = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / LOCK_FILE).write_text(json.dumps({"pid": live.pid,
                                                      "host": socket.gethostname()}))
        with pytest.raises(DirectoryTaken, match=f"in progress there \\(pid {live.pid}\\)"):
            check_run_dir(tmp_path, None)
        release(tmp_path)
        assert (tmp_path / LOCK_FILE).is_file()  # not ours
    finally:
        live.kill()
        live.wait()


def _interrupt(tmp_path: Path, signals: list[tuple[float, int]], *args: str
               ) -> tuple[subprocess.CompletedProcess, Path]:
    """`ganrun` into tmp_path/run, sent each (delay, signal) in turn, as a user's Ctrl-C or
    SLURM's SIGTERM would come while it starts."""
    run_dir = tmp_path / "run"
    proc = subprocess.Popen([GANRUN, *QUICK, "train.steps=100000", "train.ckpt_every=50", *args,
                             f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for delay, number in signals:
        time.sleep(delay)
        proc.send_signal(number)
    out, err = proc.communicate(timeout=300)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_dir


@pytest.mark.parametrize("delay", [0.4, 1.5], ids=["importing", "composing-or-building"])
@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_ganrun_starts_is_one_line_and_a_consistent_directory(tmp_path, delay,
                                                                              number):
    proc, run_dir = _interrupt(tmp_path, [(delay, number)])
    name = signal.Signals(number).name
    assert proc.returncode == 128 + number, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ganrun:")]
    assert lines == [f"ganrun: interrupted: {name} at generator step 0; no checkpoint yet"], \
        proc.stderr
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "interrupted" and saved["g_steps"] == 0
    assert not (run_dir / "checkpoints").exists()  # nothing trained, nothing half saved
    assert not (run_dir / LOCK_FILE).exists()


def test_a_second_signal_while_starting_stops_at_once_in_one_line(tmp_path):
    proc, _ = _interrupt(tmp_path, [(0.4, signal.SIGINT), (0.1, signal.SIGINT)])
    assert proc.returncode == 130
    assert "Traceback" not in proc.stderr
    assert [line for line in proc.stderr.splitlines() if line.startswith("ganrun:")] == [
        "ganrun: interrupted: SIGINT again while starting: stopped at once, before anything "
        "was trained"]
