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
from ganrun.rundirs import died

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
    notes: list[str] = field(default_factory=list)  # its files that could not be read


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _configured_dataset(path: Path) -> str | None:
    """The dataset in a job's composed config (.hydra/config.yaml), if it has one."""
    config_file = path / ".hydra" / "config.yaml"
    config, _ = _dict_of(config_file, lambda p: yaml.safe_load(p.read_text())) \
        if config_file.is_file() else (None, None)
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


def _dict_of(path: Path, reader) -> tuple[dict | None, str | None]:
    """A JSON or YAML file that must hold a mapping: (it, None), or (None, what is
    wrong with it) for a file half written (a crash, a full disk) or of another shape."""
    try:
        value = reader(path)
    except (OSError, ValueError, yaml.YAMLError) as e:
        return None, f"{path.name} unreadable ({type(e).__name__}: {str(e).splitlines()[0][:80]})"
    if not isinstance(value, dict):
        return None, f"{path.name} holds a {type(value).__name__}, not a mapping"
    return value, None


def _evaluations(log: Path) -> tuple[list[dict], str | None]:
    """metrics.jsonl's evaluations; a line that cannot be read (the last one half
    written by a crash, say) is skipped and named."""
    records, bad = [], []
    for number, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
        try:
            record = restore_non_finite(json.loads(line))
            if not isinstance(record, dict) or not isinstance(record.get("metrics"), dict):
                raise ValueError("not an evaluation")
            int(record["step"])
        except (ValueError, KeyError, TypeError):
            bad.append(number)
            continue
        records.append(record)
    note = (f"metrics.jsonl: line{'s' * (len(bad) > 1)} {', '.join(map(str, bad))} unreadable, "
            "skipped") if bad else None
    return records, note


def read_job(path: Path) -> Job | None:
    """A job directory as report and resume read it; damaged files are named in the
    job's `notes` (metrics.json: the job is `unreadable`), never a traceback."""
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    notes: list[str] = []
    try:
        overrides = yaml.safe_load(overrides_file.read_text()) or []
        if not isinstance(overrides, list):
            raise ValueError("not a list")
        overrides = [str(o) for o in overrides]
    except (OSError, ValueError, yaml.YAMLError) as e:
        notes.append(f".hydra/overrides.yaml unreadable ({type(e).__name__}); "
                     "the job is named by its directory")
        overrides = [o for o in path.name.split("_", 1)[-1].split(",") if "=" in o]
    seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "seed"), "0")
    config = configuration(overrides, path.parent)
    metrics_file = path / "metrics.json"
    if metrics_file.is_file():
        saved, problem = _dict_of(metrics_file, read_json)
        if saved is None:
            notes.append(problem)
            saved = {"status": "unreadable", "reason": problem}
    else:
        saved = {"status": "failed", "reason": "no metrics.json (killed before it was written)"}

    def section(name: str) -> dict:
        value = saved.get(name)
        return value if isinstance(value, dict) else {}

    health = {f"health/{k}": v for k, v in section("health").items() if k != "warnings"}
    finals = {k: v for k, v in {**section("losses"), **section("metrics"), **health}.items()
              if _number(v) is not None}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    evaluation: dict = {}  # the last one's protocol says what the metrics were measured on
    log = path / "metrics.jsonl"
    if log.is_file():
        records, note = _evaluations(log)
        notes += [note] if note else []
        for evaluation in records:
            for name, value in evaluation["metrics"].items():
                if _number(value) is not None:
                    curves[name].append((int(evaluation["step"]), float(value)))
    choices = section("choices")
    status, resume = str(saved.get("status", "failed")), None
    if died(saved):
        status, resume = "died", resume_command(path, overrides)
    warned = [w for w in section("health").get("warnings", []) or [] if isinstance(w, dict)]
    warnings = [w.get("kind", "?") for w in warned]
    return Job(path, config, seed, status, saved.get("reason"),
               int(_number(saved.get("g_steps")) or 0), {k: float(v) for k, v in finals.items()},
               _number(saved.get("images_per_second")), dict(curves), warnings, warned,
               pid=saved.get("pid"), resume=resume, loss=choices.get("loss"),
               dataset=(evaluation.get("dataset") or choices.get("dataset")
                        or _configured_dataset(path)),
               extractor=evaluation.get("extractor"), notes=notes)


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
