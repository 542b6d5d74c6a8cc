"""hydra/launcher=fleet: a multirun's jobs that share structure train together, in
fleets of at most `fleet.size` members (ganrun.fleet.plan), one fleet after another;
a job with a component that cannot join a fleet trains alone, as under Hydra's basic
launcher, after a line naming the component.

Each job still goes through Hydra's own set-up (its job directory, .hydra/ files,
numbering): Hydra's `run_job` runs it with a task that only takes note of it; the
fleet then trains the noted jobs. Each member's ganrun.log holds the fleet's lines
and its own (ganrun.fleet.members.CURRENT tells them apart).

The Hydra plugin itself is hydra_plugins/ganrun_fleet (Hydra finds launchers only
there); this module is its body.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict

from ganrun.config.compose import honour_choices
from ganrun.errors import Interrupted, UserError
from ganrun.outputs import (
    METRICS_FILE,
    objective_value,
    resume_command,
    sweep_checkpoint,
    write_json,
)

log = logging.getLogger("ganrun")


class _Noted:
    """A job Hydra has set up and not run: its config, directory and Hydra config."""

    def __init__(self):
        self.cfg: DictConfig | None = None
        self.hydra_cfg: DictConfig | None = None
        self.run_dir: str | None = None

    def __call__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.hydra_cfg = HydraConfig.instance().cfg
        self.run_dir = HydraConfig.get().runtime.output_dir


class MemberLog(logging.Filter):
    """A member's ganrun.log takes the fleet's records and its own, not its
    siblings'."""

    def __init__(self, name: str):
        super().__init__()
        self.member = name

    def filter(self, record: logging.LogRecord) -> bool:
        from ganrun.fleet.members import CURRENT

        current = CURRENT.get()
        return current is None or current == self.member


class MemberFormatter(logging.Formatter):
    """The console's lines in a fleet say whose they are: [job 3] for a member's,
    [fleet of jobs 0-3] for the fleet's own."""

    def __init__(self, jobs: dict[str, int]):
        super().__init__("[%(asctime)s][%(job)s][%(name)s][%(levelname)s] - %(message)s")
        self.jobs = jobs
        numbers = sorted(jobs.values())
        self.fleet = (f"fleet of jobs {numbers[0]}-{numbers[-1]}" if len(numbers) > 1
                      else f"fleet of job {numbers[0]}")

    def format(self, record: logging.LogRecord) -> str:
        from ganrun.fleet.members import CURRENT

        member = CURRENT.get()
        record.job = f"job {self.jobs[member]}" if member in self.jobs else self.fleet
        return super().format(record)


class FleetLauncherBase(Launcher):
    def __init__(self) -> None:
        super().__init__()
        self.config: DictConfig | None = None
        self.task_function = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def _sweep_config(self, overrides, idx: int) -> DictConfig:
        sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config,
                                                                          list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = idx
            sweep_config.hydra.job.num = idx
            # ckpt_path=<a sweep's directory>: each job resumes its namesake there
            subdir = str(OmegaConf.select(sweep_config, "hydra.sweep.subdir"))
            sweep_config.ckpt_path = sweep_checkpoint(sweep_config.get("ckpt_path"), subdir)
        honour_choices(sweep_config, dict(sweep_config.hydra.runtime.choices),
                       [str(o) for o in sweep_config.hydra.overrides.task])
        return sweep_config

    def _alone(self, sweep_config: DictConfig) -> JobReturn:
        ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                      config=sweep_config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return ret

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from ganrun.cli.messages import quiet_libraries
        from ganrun.config.schema import validate
        from ganrun.fleet.plan import plan, refusal

        quiet_libraries()

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = [self._sweep_config(o, initial_job_idx + i) for i, o in enumerate(job_overrides)]
        tasks, why = [], {}
        for i, sweep_config in enumerate(configs):
            task = sweep_config.copy()
            with open_dict(task):
                del task["hydra"]
            try:
                tasks.append(validate(task))
                why[i] = refusal(tasks[-1])
            except UserError as e:  # its own run says so, as under the basic launcher
                tasks.append(task)
                why[i] = str(e)
        _check_settings(self.config.fleet)
        fleet = self.config.fleet
        groups = plan([t if why[i] is None else None for i, t in enumerate(tasks)],
                      int(fleet.size))
        log.info("Launching %d jobs as %d fleet(s) and %d job(s) alone", len(configs),
                 sum(len(g) > 1 or why[g[0]] is None for g in groups),
                 sum(len(g) == 1 and why[g[0]] is not None for g in groups))
        returns: dict[int, JobReturn] = {}
        for group in groups:
            if len(group) == 1 and why[group[0]] is not None:
                i = group[0]
                log.info("\t#%d : %s (alone: %s)", initial_job_idx + i,
                         " ".join(filter_overrides(job_overrides[i])), why[i])
                returns[i] = self._alone(configs[i])
                continue
            for i in group:
                log.info("\t#%d : %s (fleet of %d)", initial_job_idx + i,
                         " ".join(filter_overrides(job_overrides[i])), len(group))
            returns.update(self._fleet(group, configs))
        return [returns[i] for i in range(len(configs))]

    def _fleet(self, group: list[int], configs: list[DictConfig]) -> dict[int, JobReturn]:
        from ganrun.fleet.run import run_fleet

        noted, returns = [], {}
        for i in group:
            note = _Noted()
            returns[i] = run_job(hydra_context=self.hydra_context, task_function=note,
                                 config=configs[i], job_dir_key="hydra.sweep.dir",
                                 job_subdir_key="hydra.sweep.subdir")
            noted.append(note)
        handlers = _member_logs(noted, configs[group[0]])
        jobs = {Path(n.run_dir).name: int(configs[i].hydra.job.num) for i, n in zip(group, noted, strict=True)}
        for handler in logging.getLogger().handlers:
            if type(handler) is logging.StreamHandler:
                handler.setFormatter(MemberFormatter(jobs))
        try:
            results = run_fleet([n.cfg for n in noted], [n.run_dir for n in noted],
                                hydra_cfgs=[n.hydra_cfg for n in noted])
            for i, note, result in zip(group, noted, results, strict=True):
                target = note.cfg.get("optimized_metric")
                returns[i].return_value = objective_value(result, target) if target else None
                returns[i].status = JobStatus.COMPLETED
        except Interrupted as e:
            # Every member saved its checkpoint: the sweep's own command, with ckpt_path
            # set to the sweep's directory, resumes each job from its namesake's.
            overrides = [str(o) for o in self.config.hydra.overrides.task]
            sweep = str(self.config.hydra.sweep.dir)
            print(f"ganrun: interrupted: {e.signal_name}: every member of the fleet saved its "
                  f"checkpoint\nganrun: resume with: "
                  f"{resume_command(['-m', 'hydra/launcher=fleet', *overrides], sweep)}",
                  file=sys.stderr)
            if e.signal_name != "SIGTERM":  # Ctrl-C stops the sweep; SIGTERM this fleet
                sys.exit(128 + e.signal_number)
            for i in group:
                returns[i].return_value = None
                returns[i].status = JobStatus.COMPLETED
        except UserError as e:  # the fleet cannot start (a checkpoint that does not fit)
            print(f"ganrun: error: {e}", file=sys.stderr)
            for i, note in zip(group, noted, strict=True):
                write_json(Path(note.run_dir) / METRICS_FILE,
                           {"status": "failed", "reason": str(e)})
                returns[i].return_value = None
                returns[i].status = JobStatus.COMPLETED
        finally:
            for handler in handlers:
                logging.getLogger().removeHandler(handler)
                handler.close()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return returns


def _check_settings(fleet) -> None:
    """fleet.size and fleet.devices, the launcher's own: one line and exit 1 before any
    job starts, not one failure per job."""
    from ganrun.config.schema import FleetConfig
    from ganrun.ranges import check_ranges

    try:
        for key in ("size", "devices"):
            value = fleet.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise UserError(f"fleet.{key}={value}: must be an integer >= 1")
        check_ranges(FleetConfig, {"size": fleet.size, "devices": fleet.devices}, "fleet.")
        if fleet.devices != 1:
            raise UserError(f"fleet.devices={fleet.devices}: fleets train on one device for now; "
                            "run one sweep per device (each with hydra.sweep.dir of its own)")
    except UserError as e:
        print(f"ganrun: error: {e}", file=sys.stderr)
        sys.exit(1)


def _member_logs(noted: list[_Noted], sweep_config: DictConfig) -> list[logging.Handler]:
    """A ganrun.log in each member's directory (Hydra's job log configures one file)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        root.removeHandler(handler)
        handler.close()
    name = sweep_config.hydra.job.name
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers = []
    for note in noted:
        handler = logging.FileHandler(os.path.join(note.run_dir, f"{name}.log"))
        handler.setFormatter(fmt)
        handler.addFilter(MemberLog(Path(note.run_dir).name))
        root.addHandler(handler)
        handlers.append(handler)
    return handlers
