"""Past one process: Lightning's DDP, launched so that Hydra never runs twice.

Lightning's own launcher starts each extra process by running the command line
again; under Hydra that makes every process compose anew and, in a sweep, start
the whole sweep again (the known trap). Here the extra processes run
`python -m ganrun.worker <run dir>` instead: they read the run's validated
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
from pathlib import Path

import torch
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


class WorkerLauncher(_SubprocessScriptLauncher):
    """Lightning's subprocess launcher (same environment variables, the same observer
    that stops everything when a process fails, the same share of CPU threads per
    process), with ganrun's worker as the command."""

    def __init__(self, cluster_environment, num_processes: int, num_nodes: int, run_dir: Path):
        super().__init__(cluster_environment, num_processes, num_nodes)
        self.run_dir = run_dir

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
            subprocess.Popen([sys.executable, "-m", "ganrun.worker", str(self.run_dir)],
                             env={**os.environ, "LOCAL_RANK": str(local),
                                  "RANK": str(node_first + local)},
                             preexec_fn=_die_with_parent)
            for local in range(1, self.num_processes)]

    def join(self, timeout: float = 60.0) -> None:
        """Wait for the other processes to finish (killing any that hangs), then leave
        this process as it was: no process group, no launch variables, so that the next
        job of a sweep launches its own processes."""
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
