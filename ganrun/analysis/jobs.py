"""A sweep's jobs as their directories tell them: each job's configuration (its
overrides but the seed), status, final and logged metrics, health warnings and what
it was evaluated on; whether a job that says "running" still runs, and the command
that resumes one that died."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ganrun.outputs import read_json, restore_non_finite, varied_overrides
from ganrun.rundirs import gone

# Jobs that neither finished nor broke: a signal stopped them ("interrupted", with a
# checkpoint to resume from), they were killed outright ("died": metrics.json says
# "running" but its process is gone), or they still run.
STOPPED = ("interrupted", "running", "died")


@dataclass
class Job:
    path: Path
    config: str                 # its overrides without the seed: "loss=bce,optim=adam"
    seed: str
    status: str
    reason: str | None
    g_steps: int
    finals: dict[str, float]
    images_per_second: float | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # health warnings' kinds
    warned: list[dict] = field(default_factory=list)  # the warnings: kind, step, message
    loss: str | None = None  # the loss it trained with (metrics.json's choices)
    pid: int | None = None  # of a job that says "running" (or "died")
    resume: str | None = None  # the command that resumes a job that died
    dataset: str | None = None    # its last evaluation's (else the one it was configured with)
    extractor: str | None = None  # its last evaluation's; None: it logged none


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _configured_dataset(path: Path) -> str | None:
    """The dataset in a job's composed config (.hydra/config.yaml), if it has one."""
    config_file = path / ".hydra" / "config.yaml"
    config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else None
    dataset = (config or {}).get("dataset")
    return dataset.get("name") if isinstance(dataset, dict) else None


def configuration(overrides: list[str], sweep: Path) -> str:
    """A job's configuration: the overrides that tell it apart from its sweep's other jobs
    (what they all share left out, as in the job directories' names), but its seed, which
    a configuration's rows are averaged over; all of them but the seed where that leaves
    none (a sweep over seeds only)."""
    def label(sweep_dir: Path | None) -> str:
        return ",".join(line for key, line in varied_overrides(overrides, sweep_dir)
                        if key != "seed")

    return label(sweep) or label(None) or "(defaults)"


def read_job(path: Path) -> Job | None:
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "seed"), "0")
    config = configuration(overrides, path.parent)
    metrics_file = path / "metrics.json"
    saved = read_json(metrics_file) if metrics_file.is_file() else {
        "status": "failed", "reason": "no metrics.json (killed before it was written)"}
    health = {f"health/{k}": v for k, v in (saved.get("health") or {}).items() if k != "warnings"}
    finals = {k: v for k, v in {**saved.get("losses", {}), **saved.get("metrics", {}),
                                **health}.items() if _number(v) is not None}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    evaluation: dict = {}  # the last one's protocol says what the metrics were measured on
    log = path / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            evaluation = restore_non_finite(json.loads(line))
            for name, value in evaluation["metrics"].items():
                if _number(value) is not None:
                    curves[name].append((evaluation["step"], float(value)))
    choices = saved.get("choices") or {}
    status, resume = saved.get("status", "failed"), None
    if status == "running" and saved.get("pid") and gone(saved["pid"], saved.get("host")):
        status, resume = "died", resume_command(path, overrides)
    warned = [w for w in (saved.get("health") or {}).get("warnings", []) if isinstance(w, dict)]
    warnings = [w.get("kind", "?") for w in warned]
    return Job(path, config, seed, status, saved.get("reason"),
               int(saved.get("g_steps") or 0), {k: float(v) for k, v in finals.items()},
               _number(saved.get("images_per_second")), dict(curves), warnings, warned,
               pid=saved.get("pid"), resume=resume, loss=choices.get("loss"),
               dataset=(evaluation.get("dataset") or choices.get("dataset")
                        or _configured_dataset(path)),
               extractor=evaluation.get("extractor"))


def resume_command(path: Path, overrides: list[str]) -> str:
    """The command that resumes the job in `path` from its checkpoint ("" without one)."""
    from ganrun.outputs import CHECKPOINT_FILE
    from ganrun.outputs import resume_command as command

    ckpt = path / "checkpoints" / CHECKPOINT_FILE
    return command(overrides, ckpt) if ckpt.is_file() else ""


def collect(sweep: Path) -> list[Job]:
    def job_number(p: Path) -> tuple[int, str]:  # 2_... before 10_...
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    jobs = [read_job(p) for p in sorted(sweep.iterdir(), key=job_number) if p.is_dir()]
    return [j for j in jobs if j is not None]


def status_text(job: Job) -> str:
    """A job's status; a running one with its pid."""
    return f"running (pid {job.pid})" if job.status == "running" and job.pid else job.status


def why_not_finished(job: Job) -> str:
    """What report.md says of a job that did not finish: its reason; for one that died,
    how far it got and how to resume it."""
    if job.status != "died":
        return f": {job.reason}" if job.reason else ""
    hint = (f"resume with: `{job.resume}`" if job.resume
            else "no checkpoint: run it again")
    return f": pid {job.pid} is gone, last logged generator step {job.g_steps}; {hint}"
