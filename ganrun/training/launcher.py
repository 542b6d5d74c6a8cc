"""Past one process: Lightning's DDP, launched so that Hydra never runs twice.

This is the one module of ganrun that touches Lightning's private API, so that a
Lightning release that changes it breaks here and in tests/test_lightning_api.py
(which checks every name below), nowhere else. pyproject.toml pins
pytorch-lightning to the minor version these names were tested with. It relies on:
- `pytorch_lightning.strategies.launchers.subprocess_script._SubprocessScriptLauncher`:
  subclassed; its `__init__(cluster_environment, num_processes, num_nodes)`, its
  `procs` list, `kill(signum)`; `launch(function, *args, trainer=None, **kwargs)` and
  `_call_children_scripts()` overridden; `_check_can_spawn_children()` called.
- `DDPStrategy._configure_launcher()`: overridden to set `self._launcher`, which the
  public `strategy.launcher` returns.
- `lightning_fabric.utilities.distributed._set_num_threads_if_needed(num_processes=)`.
- `Trainer._checkpoint_connector.dump_checkpoint(weights_only)`: a checkpoint without
  `Trainer.save_checkpoint`'s closing barrier (`WorkerLauncher.checkpoint_alone`).

Lightning's own launcher starts each extra process by running the command line
again; under Hydra that makes every process compose anew and, in a sweep, start
the whole sweep again (the known trap). Here the extra processes run
`python -m ganrun.training.worker <run dir>` instead: they read the run's validated
config.yaml and join the same run directory. Where a cluster starts the
processes itself (SLURM's srun, torchrun), Lightning detects it and nothing is
launched.

Rank rule: the global rank comes from RANK (torchrun), else SLURM_PROCID under
SLURM, else NODE_RANK x devices + LOCAL_RANK; process 0 writes everything.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from lightning_fabric.utilities.distributed import _set_num_threads_if_needed
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher


def global_rank(devices_per_node: int = 1) -> int:
    """This process's rank before Lightning knows it, from the launch environment."""
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"])
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"])
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
    return node * devices_per_node + int(env.get("LOCAL_RANK", "0"))


def _die_with_parent() -> None:
    """In the child, before exec: killed when the launching process dies (Linux), so
    no worker outlives a run that was killed outright."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cause_of(returncode: int) -> str:
    """How a process ended, from its exit status: "SIGKILL" (-9), "exit code 1"."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


STUCK_GRACE = 120.0  # seconds process 0 may take to notice a dead peer (gloo: about 1)


class WorkerLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher (same environment variables, the same share of
    CPU threads per process), with ganrun's worker as the command, and its own watch
    over the workers in place of Lightning's observer, which SIGKILLs process 0 within
    5 s of a worker's death: here process 0 lives on to save the last completed step
    (its next collective fails: gloo raises at once), and is killed only if it is
    still stuck in a collective STUCK_GRACE seconds later (NCCL may wait forever)."""

    def __init__(self, cluster_environment, num_processes: int, num_nodes: int, run_dir: Path):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.run_dir = run_dir
        self.dead: tuple[int, int] | None = None  # (rank, exit status) of the first to die
        self.handled = threading.Event()  # process 0 has seen the death and is reporting it

    def launch(self, function, *args, trainer=None, **kwargs):
        self.cluster_environment.validate_settings(num_devices=self.num_processes,
                                                   num_nodes=self.num_nodes)
        if not self.cluster_environment.creates_processes_externally:
            self._call_children_scripts()
            threading.Thread(target=self._watch, args=(os.getpid(),), daemon=True,
                             name="ganrun-worker-watch").start()
        _set_num_threads_if_needed(num_processes=self.num_processes)
        return function(*args, **kwargs)

    def _watch(self, main_pid: int) -> None:
        while self.dead_peer() is None:
            if all(proc.returncode == 0 for proc in self.procs):
                return
            time.sleep(0.5)
        if not self.handled.wait(STUCK_GRACE):
            import logging

            logging.getLogger("ganrun").error(
                "%s; process 0 is stuck in a collective: stopping it (resume from the last "
                "checkpoint written)", self.death())
            os.kill(main_pid, signal.SIGKILL)

    def dead_peer(self, wait: float = 0.0) -> tuple[int, int] | None:
        """(global rank, exit status) of the first worker that died (a non-zero exit or a
        signal), waiting up to `wait` seconds for one to be seen; None while all live."""
        deadline = time.monotonic() + wait
        while self.dead is None:
            for local, proc in enumerate(self.procs, start=1):
                if proc.poll():
                    first = self.cluster_environment.node_rank() * self.num_processes
                    self.dead = (first + local, proc.returncode)
                    break
            if self.dead is not None or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        return self.dead

    def death(self) -> str:
        """"process 1 died (SIGKILL)", for the first worker that died."""
        rank, returncode = self.dead
        return f"process {rank} died ({cause_of(returncode)})"

    @staticmethod
    def checkpoint_alone(trainer) -> dict:
        """The checkpoint `trainer.save_checkpoint` would write (optimizer state too),
        made with no collective: its closing barrier would wait for a dead process."""
        return trainer._checkpoint_connector.dump_checkpoint(weights_only=False)

    ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE", "RANK")

    def _call_children_scripts(self) -> None:
        self._check_can_spawn_children()
        self._saved_env = {key: os.environ.get(key) for key in self.ENV}
        env = self.cluster_environment
        os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                          NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                          WORLD_SIZE=str(self.num_processes * self.num_nodes))
        node_first = env.node_rank() * self.num_processes
        os.environ["RANK"] = str(node_first)
        self.procs = [
            subprocess.Popen([sys.executable, "-m", "ganrun.training.worker", str(self.run_dir)],
                             env={**os.environ, "LOCAL_RANK": str(local),
                                  "RANK": str(node_first + local)},
                             preexec_fn=_die_with_parent)
            for local in range(1, self.num_processes)]

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the other processes to finish (killing any that hangs), then leave
        this process as it was: no process group, no launch variables, so that the next
        job of a sweep launches its own processes."""
        self.handled.set()
        if self.dead is not None:  # the others would wait for it forever
            timeout = 5.0
        for proc in self.procs:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class GanrunDDPStrategy(DDPStrategy):
    """Lightning's DDP with ganrun's launcher. D and G take turns, so each backward
    leaves one of them without gradients: unused parameters are expected."""

    def __init__(self, run_dir: Path, **kwargs):
        kwargs.setdefault("find_unused_parameters", True)
        super().__init__(**kwargs)
        self.run_dir = run_dir

    def _configure_launcher(self) -> None:
        self._launcher = WorkerLauncher(self.cluster_environment, self.num_processes,
                                        self.num_nodes, self.run_dir)


def strategy_for(cfg, run_dir: Path):
    """The Trainer's strategy: ganrun's DDP where Lightning's would launch processes
    (`ddp`, or `auto` with several devices or nodes), Lightning's own otherwise."""
    name, devices = cfg.trainer.strategy, cfg.trainer.devices
    several = cfg.trainer.num_nodes > 1 or (isinstance(devices, int) and devices > 1) or (
        not isinstance(devices, int | str) and len(devices) > 1)
    if name == "ddp" or (name == "auto" and several):
        return GanrunDDPStrategy(run_dir)
    return name
