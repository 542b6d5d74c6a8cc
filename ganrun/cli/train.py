"""`ganrun`: the training command, the only @hydra.main.

Nothing heavy is imported here: torch and Lightning load inside the task, after
Hydra has parsed the command line (so `ganrun --help` is quick).
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import hydra
from omegaconf import DictConfig

from ganrun.config.compose import (  # noqa: F401  (safe_name registers the resolver)
    compose_config,
    honour_choices,
    safe_name,
)
from ganrun.errors import DivergedError, Interrupted, ObjectiveError, PeerDied, UserError

log = logging.getLogger("ganrun")

TRACEBACKS = "GANRUN_TRACEBACKS"  # "1": the user asked for tracebacks (HYDRA_FULL_ERROR=1)
@hydra.main(config_path="pkg://ganrun.configs", config_name="train", version_base="1.3")
def _train(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ganrun.cli.messages import quiet_libraries
    from ganrun.config.schema import validate
    from ganrun.memory import check_training
    from ganrun.outputs import METRICS_FILE, write_json

    quiet_libraries()
    hydra_cfg = HydraConfig.get()
    run_dir = hydra_cfg.runtime.output_dir
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    honour_choices(cfg, dict(hydra_cfg.runtime.choices), [str(o) for o in hydra_cfg.overrides.task])
    if multirun:  # ckpt_path=<a sweep's directory>: this job's namesake's checkpoint
        from omegaconf import open_dict

        from ganrun.outputs import sweep_checkpoint

        with open_dict(cfg):
            cfg.ckpt_path = sweep_checkpoint(cfg.get("ckpt_path"), os.path.basename(run_dir))
    try:
        cfg = validate(cfg)
        check_training(cfg)  # before Lightning is imported: a refusal takes a second
    except UserError as e:
        if multirun:  # the sweep's table lists the job as failed, and why
            write_json(os.path.join(run_dir, METRICS_FILE), {"status": "failed", "reason": str(e)})
        else:  # nothing ran: no run directory to explain
            _discard(run_dir)
        # A wrong optimized_metric is wrong for every job: stop the sweep, not just this job.
        return _fail(e, multirun and not isinstance(e, ObjectiveError))
    from ganrun.training.run import run

    _fit_to_launcher(cfg, hydra_cfg.launcher)
    if multirun:
        _share_the_machine(cfg, hydra_cfg)
    objective = cfg.get("optimized_metric")
    try:
        result = run(cfg, run_dir=run_dir, hydra_choices=dict(hydra_cfg.runtime.choices))
    except Interrupted as e:  # metrics.json says interrupted
        resume = (f"\nganrun: resume with: {resume_command(hydra_cfg, e.checkpoint)}"
                  if e.checkpoint else "")
        print(f"ganrun: interrupted: {e}{resume}", file=sys.stderr)
        # In a sweep, SIGTERM ends this job (SLURM, or `kill <pid>` of one job) and the
        # sweep goes on; SIGINT (Ctrl-C) stops the sweep.
        if multirun and e.signal_name == "SIGTERM":
            return float("nan") if objective else None
        sys.exit(128 + e.signal_number)
    except PeerDied as e:  # metrics.json says failed, and why; ganrun.log has the traceback
        from ganrun.training.run import to_log_file

        saved = (f"process 0 saved that step (all but process {e.rank}'s random state); resume "
                 f"with: {resume_command(hydra_cfg, e.checkpoint)}" if e.checkpoint
                 else "no checkpoint saved")
        line = f"ganrun: failed: process {e.rank} died ({e.cause}) at generator step {e.step}; {saved}"
        print(line, file=sys.stderr)
        to_log_file(logging.ERROR, "%s", line)  # the log's last line too
        if not multirun:
            sys.exit(1)
        return float("nan") if objective else None
    except UserError as e:  # metrics.json already says failed / diverged, and why
        _fail(e, multirun)
        return float("nan") if objective else None
    except Exception as e:
        if not multirun:
            raise
        # One broken job must not stop the sweep: metrics.json says failed, and why.
        log.exception("job failed")
        print(f"ganrun: job failed: {e.__class__.__name__}: {e}", file=sys.stderr)
        return float("nan") if objective else None
    log.info("%s: %d generator steps, %d images in %.1f s; outputs in %s",
             result["status"], result["g_steps"], result["images_seen"],
             result["wall_seconds"], run_dir)
    if objective:  # the value a sweeper (Optuna) optimises
        from ganrun.outputs import objective_value

        return objective_value(result, objective)
    return None


def _discard(run_dir: str) -> None:
    """Remove a run directory that holds only what Hydra wrote before the run started
    (its .hydra/ and ganrun.log, and the run's lock); one with anything else in it is
    left alone."""
    import shutil

    from ganrun.rundirs import LOCK_FILE

    if os.path.isdir(run_dir) and set(os.listdir(run_dir)) <= {".hydra", "ganrun.log", LOCK_FILE}:
        shutil.rmtree(run_dir, ignore_errors=True)


def resume_command(hydra_cfg, checkpoint: str) -> str:
    """The command that resumes this run (ganrun.outputs.resume_command)."""
    from ganrun.outputs import resume_command as command

    return command(list(hydra_cfg.overrides.task), checkpoint)


def _fit_to_launcher(cfg: DictConfig, launcher) -> None:
    """Under submitit (SLURM) with several tasks, the job is one Lightning DDP run over
    them: one process per task (and GPU), `tasks_per_node` on each of `nodes`.
    Lightning reads the ranks from SLURM's environment; nothing is launched here."""
    if "submitit" not in str(launcher.get("_target_", "")):
        return
    tasks, nodes = int(launcher.get("tasks_per_node", 1)), int(launcher.get("nodes", 1))
    if tasks * nodes > 1:
        cfg.trainer.strategy = "ddp"
        cfg.trainer.devices = tasks
        cfg.trainer.num_nodes = nodes


def _share_the_machine(cfg: DictConfig, hydra_cfg) -> None:
    """Parallel sweep jobs split the CPU threads evenly (no oversubscription), and on a
    machine with several GPUs each job takes its own (job number modulo the count)."""
    import torch

    launcher = hydra_cfg.launcher
    if "joblib" in str(launcher.get("_target_", "")):
        cores = os.cpu_count() or 1
        n_jobs = int(launcher.get("n_jobs", -1))
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib's -1 = all
        torch.set_num_threads(max(1, cores // parallel))
    gpus = torch.cuda.device_count()
    if gpus > 1 and cfg.trainer.devices == 1 and cfg.trainer.accelerator in ("auto", "gpu", "cuda"):
        cfg.trainer.devices = [int(hydra_cfg.job.num) % gpus]


def _fail(error: UserError, multirun: bool) -> None:
    """One message, no traceback; in a sweep, the other jobs go on."""
    if os.environ.get(TRACEBACKS, os.environ.get("HYDRA_FULL_ERROR")) == "1":
        raise error
    kind = "diverged" if isinstance(error, DivergedError) else "error"
    print(f"ganrun: {kind}: {error}", file=sys.stderr)
    # The same line in the run's ganrun.log, without repeating it on the console.
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: %s", (kind, error), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    if not multirun:
        sys.exit(1)
    return None


def _find_plugins() -> None:
    """Hydra looks for launchers by walking the hydra_plugins namespace's folders; an
    editable install of ganrun maps hydra_plugins.ganrun_fleet (hydra/launcher=fleet)
    through an import hook that such a walk does not see, so its folder is added."""
    import importlib.util

    import hydra_plugins

    spec = importlib.util.find_spec("hydra_plugins.ganrun_fleet")
    if spec is None or not spec.submodule_search_locations:
        return
    folder = os.path.dirname(list(spec.submodule_search_locations)[0])
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(folder)


def main() -> None:
    """`ganrun`: Hydra's command line, with every mistake in it said in one line.

    Hydra is asked to raise (HYDRA_FULL_ERROR) so that its composition errors come
    here and are explained; a user who set HYDRA_FULL_ERROR=1 gets tracebacks."""
    from ganrun import interrupts

    interrupts.defer()  # a Ctrl-C while starting stops the run cleanly, not mid-import
    from hydra.errors import HydraException

    from ganrun.rundirs import DirectoryTaken

    _find_plugins()

    from ganrun.cli.messages import (
        check_launcher,
        expand_home,
        explain,
        help_text,
        launcher_note,
        quiet_libraries,
        quote_paths,
    )

    args = quote_paths(expand_home(sys.argv[1:]))
    tracebacks = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        if "-h" in args or "--help" in args:
            print(help_text())
            return
        problem = check_launcher(args)
        if problem:
            _stop(problem)
        note = launcher_note(args)
        if note:
            print(note, file=sys.stderr)
        sys.argv[1:] = args
        quiet_libraries()  # before Hydra: a sweeper (Optuna) logs before any job
        os.environ[TRACEBACKS] = "1" if tracebacks else "0"
        os.environ["HYDRA_FULL_ERROR"] = "1"
        _train()
    except DirectoryTaken as e:  # nothing was written into it
        _stop(str(e))
    except KeyboardInterrupt as e:  # a second signal: stopped at once (metrics.json says so)
        reason = getattr(e, "reason", "stopped at once by a second signal")
        print(f"ganrun: interrupted: {reason}", file=sys.stderr)
        sys.exit(128 + getattr(e, "signal_number", signal.SIGINT))
    except BrokenPipeError:  # `ganrun --help | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except HydraException as e:
        if tracebacks:
            raise
        _stop(explain(e, args))
    except OSError as e:  # Hydra making the run directory or its log file
        if tracebacks:
            raise
        where = f" {e.filename}" if e.filename else ""
        _stop(f"cannot write{where}: {e.strerror or e} (hydra.run.dir=... or hydra.sweep.dir=... "
              "choose where runs go)")


def _stop(message: str) -> None:
    print(f"ganrun: error: {message}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
    main()
