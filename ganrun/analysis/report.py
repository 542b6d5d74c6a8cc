"""`ganrun-report <multirun dir>`: a sweep's ranked tables, one per comparable group.

Jobs that differ only by `seed` are one configuration. Configurations evaluated on
the same dataset with the same feature extractor are one group: ranked against each
other, never against another group's (an FID under the digits classifier and one
under Inception, or on another dataset, are different scales). For each
configuration: the number of seeds, how many diverged, failed or were stopped
(interrupted, or killed outright: "died" where its process is gone), each final metric as its mean over
seeds ± the half-width of its 95% confidence interval (Student t), images per
second, and whether Welch's t-test separates its lead over the next row at the seeds
run ("vs next"); then every job with its status. Writes report.md, report.csv (every
metric's mean, std and CI, the group, the p-values) and report_<metric>.png (the
metric against generator steps, one panel per group, one line per configuration,
the seed spread shaded) into the sweep directory, and prints report.md. The health
columns (health/collapsed_share, health/grad_norm_g, ...) are the last logged values;
"health warnings" counts the jobs of each configuration that warned of each failure
(callbacks.health).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import yaml

from ganrun.analysis.stats import ci95_half_width, welch_p
from ganrun.outputs import read_json, restore_non_finite, varied_overrides

# Lower is better for these; higher for the rest.
LOWER_IS_BETTER = {"fid", "kid", "class_kl", "reverse_kl", "ppl", "loss/d", "loss/g"}
# The default ranking metric: the first of these the jobs logged, else loss/g.
QUALITY = ("modes", "fid", "kid", "classes_covered", "is")
# What report.md shows beside each ranking metric by default (--columns all: everything).
COMPANIONS = {
    "fid": ("kid", "precision", "recall", "ppl"),
    "kid": ("fid", "precision", "recall", "ppl"),
    "modes": ("high_quality", "reverse_kl"),
    "classes_covered": ("class_kl",),
    "is": ("is_std", "classes_covered"),
    "loss/g": ("loss/d",),
    "loss/d": ("loss/g",),
}
# Step statistics on each loss's own scale: no ranking across losses by them.
LOSS_SCALED = {"loss/d", "loss/g", "D/real", "D/fake"}
# Jobs that neither finished nor broke: a signal stopped them ("interrupted", with a
# checkpoint to resume from), they were killed outright ("died": metrics.json says
# "running" but its process is gone), or they still run.
STOPPED = ("interrupted", "running", "died")
# A row's lead over the next is significant below this p (Welch, two-sided).
ALPHA = 0.05
METRIC_FOOTNOTE = ("± : 95% confidence interval of the mean over seeds, Student t "
                   "(one seed: its value alone; inf: infinite; —: none).")
LEAD_FOOTNOTE = ("vs next: Welch's two-sided t-test of this row's {metric} against the next "
                 "row's; n.s.: p ≥ 0.05, or a row with one seed or an infinite value, so the "
                 "seeds run do not separate the two.")


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
    loss: str | None = None  # the loss it trained with (metrics.json's choices)
    pid: int | None = None  # of a job that says "running" (or "died")
    resume: str | None = None  # the command that resumes a job that died
    dataset: str | None = None    # its last evaluation's (else the one it was configured with)
    extractor: str | None = None  # its last evaluation's; None: it logged none


class Spread(NamedTuple):
    """One metric over a configuration's finished seeds. std and ci95 (the half-width
    of the mean's 95% confidence interval, Student t) are NaN for one seed or an
    infinite value: no spread measured, rather than a 0 that would read as one."""
    mean: float
    std: float
    ci95: float
    values: tuple[float, ...]


NOT_LOGGED = Spread(math.nan, math.nan, math.nan, ())


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


def as_logged(name: str, names) -> str:
    """A metric name as typed (FID, Loss/G) as the jobs logged it (fid, loss/g); as typed
    when they logged no such metric."""
    if name in names:
        return name
    return next((n for n in sorted(names) if n.lower() == name.lower()), name)


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
    warnings = [w.get("kind", "?") for w in (saved.get("health") or {}).get("warnings", [])]
    return Job(path, config, seed, status, saved.get("reason"),
               int(saved.get("g_steps") or 0), {k: float(v) for k, v in finals.items()},
               _number(saved.get("images_per_second")), dict(curves), warnings,
               pid=saved.get("pid"), resume=resume, loss=choices.get("loss"),
               dataset=(evaluation.get("dataset") or choices.get("dataset")
                        or _configured_dataset(path)),
               extractor=evaluation.get("extractor"))


def gone(pid: int, host: str | None) -> bool:
    """Whether process `pid` of this machine has ended (a zombie too); on another
    machine (`host`) it cannot be told: no."""
    import socket

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


def resume_command(path: Path, overrides: list[str]) -> str:
    """The command that resumes the job in `path` from its checkpoint ("" without one)."""
    import shlex

    from ganrun.outputs import CHECKPOINT_FILE

    ckpt = path / "checkpoints" / CHECKPOINT_FILE
    if not ckpt.is_file():
        return ""
    options = [o for o in overrides if not o.startswith("ckpt_path=")]
    return shlex.join(["ganrun", *options, f"ckpt_path={ckpt}"])


def collect(sweep: Path) -> list[Job]:
    def job_number(p: Path) -> tuple[int, str]:  # 2_... before 10_...
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    jobs = [read_job(p) for p in sorted(sweep.iterdir(), key=job_number) if p.is_dir()]
    return [j for j in jobs if j is not None]


@dataclass
class Group:
    """Jobs evaluated alike (one dataset, one feature extractor): the configurations
    whose quality metrics can be ranked against each other."""
    dataset: str | None
    extractor: str | None
    jobs: list[Job]
    metric: str = "loss/g"  # what ranks it
    rows: list[dict] = field(default_factory=list)

    @property
    def heading(self) -> str:
        return f"dataset {self.dataset or 'unknown'}, extractor {self.extractor or 'none'}"

    @property
    def names(self) -> list[str]:
        """The metrics its finished jobs logged."""
        return sorted({k for j in self.jobs if j.status == "finished" for k in j.finals})

    @property
    def ranked(self) -> bool:
        return self.metric in self.names and comparable(self.jobs, self.metric)


def group_jobs(jobs: list[Job]) -> list[Group]:
    """The jobs by (dataset, extractor), in sweep order. A job that logged no evaluation
    (it failed before the first, say) joins its configuration's group, else its
    dataset's if that has only one."""
    by_config = {j.config: j.extractor for j in jobs if j.extractor}
    by_dataset: dict[str | None, set[str]] = defaultdict(set)
    for job in jobs:
        if job.extractor:
            by_dataset[job.dataset].add(job.extractor)
    groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        only = by_dataset[job.dataset]
        extractor = (job.extractor or by_config.get(job.config)
                     or (next(iter(only)) if len(only) == 1 else None))
        groups.setdefault((job.dataset, extractor), []).append(job)
    return [Group(dataset, extractor, members) for (dataset, extractor), members in groups.items()]


def default_metric(names: list[str]) -> str:
    """The first quality metric in `names`, else loss/g."""
    return next((m for m in QUALITY if m in names), "loss/g")


def spread(values: list[float]) -> Spread:
    if not values:
        return NOT_LOGGED
    if not all(math.isfinite(v) for v in values):  # an infinite reverse KL, say
        return Spread(sum(values) / len(values), math.nan, math.nan, tuple(values))
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return Spread(statistics.fmean(values), std, ci95_half_width(values), tuple(values))


def health_cell(jobs: list[Job]) -> str:
    """How many of a configuration's jobs warned of each failure: "mode collapse 2/3"."""
    kinds = sorted({k for j in jobs for k in j.warnings})
    if not kinds:
        return "—"
    return "; ".join(f"{k.replace('_', ' ')} {sum(k in j.warnings for j in jobs)}/{len(jobs)}"
                     for k in kinds)


def comparable(jobs: list[Job], metric: str) -> bool:
    """Whether `metric` can rank these jobs: a loss statistic cannot rank different losses."""
    return metric not in LOSS_SCALED or len({j.loss for j in jobs}) <= 1


def p_text(p: float) -> str:
    """"p=0.41", with as many digits as keep it on its side of ALPHA; "p<0.001"."""
    if p < 0.001:
        return "p<0.001"
    text = next(t for t in (f"{p:.{d}g}" for d in (2, 3, 4, 17))
                if (float(t) < ALPHA) == (p < ALPHA))
    return f"p={text}"


def versus(a: Spread, b: Spread) -> tuple[float, str]:
    """Welch's two-sided p-value of a row's lead over the next, and its "vs next" cell:
    "p=0.003"; "p=0.41 (n.s.)"; "n.s. (1 seed)" or "n.s. (inf)" where no test can be
    made, so the lead is not shown either (p NaN)."""
    if min(len(a.values), len(b.values)) < 2:
        return math.nan, "n.s. (1 seed)"
    if not all(math.isfinite(v) for v in (*a.values, *b.values)):
        return math.nan, "n.s. (inf)"
    p = welch_p(list(a.values), list(b.values))
    return p, p_text(p) if p < ALPHA else f"{p_text(p)} (n.s.)"


def _row(config: str, jobs: list[Job], names: list[str]) -> dict:
    """A configuration's counts, metrics (Spread each), rate and health warnings."""
    finished = [j for j in jobs if j.status == "finished"]
    row = {"config": config, "seeds": len(jobs), "finished": len(finished),
           "diverged": sum(j.status == "diverged" for j in jobs),
           "failed": sum(j.status not in ("finished", "diverged", *STOPPED) for j in jobs),
           "stopped": sum(j.status in STOPPED for j in jobs),
           "p_next": None, "vs next": ""}
    for name in names:
        row[name] = spread([j.finals[name] for j in finished if name in j.finals])
    speeds = [j.images_per_second for j in finished if j.images_per_second]
    row["images/s"] = statistics.fmean(speeds) if speeds else math.nan
    row["health"] = health_cell(jobs)
    return row


def summarise(group: Group) -> list[dict]:
    """One row per configuration of `group`, sorted by its metric (best first; NaN last),
    each with its lead over the next tested ("p_next", "vs next"); in sweep order when
    the metric is on each loss's own scale and the losses differ."""
    by_config: dict[str, list[Job]] = defaultdict(list)
    for job in group.jobs:
        by_config[job.config].append(job)
    names = group.names
    rows = [_row(config, jobs, names) for config, jobs in by_config.items()]
    if not group.ranked:
        return rows
    metric, sign = group.metric, 1 if group.metric in LOWER_IS_BETTER else -1

    def key(row):
        value = row[metric].mean
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

    rows.sort(key=key)
    measured = [r for r in rows if not math.isnan(r[metric].mean)]
    for row, below in itertools.pairwise(measured):
        row["p_next"], row["vs next"] = versus(row[metric], below[metric])
    return rows


def rank(jobs: list[Job], metric: str | None) -> list[Group]:
    """The jobs' groups, each ranked by `metric` where it logged it, else by its own
    first quality metric (loss/g without one)."""
    groups = group_jobs(jobs)
    for group in groups:
        names = group.names
        group.metric = metric if metric in names else default_metric(names)
        group.rows = summarise(group)
    return groups


def _digits(value: float, significant: int) -> str:
    """`value` to so many significant digits, without an exponent below a million:
    112 to two is "110", not "1.1e+02"."""
    return f"{float(f'{value:.{significant}g}'):g}"


def _cell(value: Spread) -> str:
    """"mean ± ci95"; the mean alone for one seed; inf for an infinite value; — for none."""
    if math.isnan(value.mean):
        return "—"
    if math.isinf(value.mean):
        return "inf" if value.mean > 0 else "-inf"
    mean = _digits(value.mean, 4)
    return mean if math.isnan(value.ci95) else f"{mean} ± {_digits(value.ci95, 2)}"


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def _status(job: Job) -> str:
    """A job's status; a running one with its pid."""
    return f"running (pid {job.pid})" if job.status == "running" and job.pid else job.status


def _why(job: Job) -> str:
    """What report.md says of a job that did not finish: its reason; for one that died,
    how far it got and how to resume it."""
    if job.status != "died":
        return f": {job.reason}" if job.reason else ""
    hint = (f"resume with: `{job.resume}`" if job.resume
            else "no checkpoint: run it again")
    return f": pid {job.pid} is gone, last logged generator step {job.g_steps}; {hint}"


def shown_columns(group: Group, columns: list[str] | None) -> list[str]:
    """report.md's metric columns for `group`: those asked, in their order; every one
    for "all"; by default its ranking metric and the companions of it that it logged."""
    if columns and "all" in columns:
        return group.names
    if columns:
        return list(columns)
    return [m for m in (group.metric, *COMPANIONS.get(group.metric, ())) if m in group.names]


def group_title(group: Group, asked: str | None) -> str:
    n = len(group.rows)
    title = f"## {group.heading}: {n} configuration{'s' * (n != 1)}, "
    if not group.names:
        return title + "none finished, nothing to rank"
    if not comparable(group.jobs, group.metric):
        return title + (f"not ranked: {group.metric} is on each loss's own scale and the losses "
                        "differ; log a quality metric (metrics.names: fid, kid, modes, ...) to "
                        "rank them")
    better = "lower" if group.metric in LOWER_IS_BETTER else "higher"
    title += f"sorted by {group.metric} ({better} is better)"
    return title + (f"; {asked} is not logged here" if asked and asked != group.metric else "")


def group_table(group: Group, columns: list[str] | None, asked: str | None) -> list[str]:
    """A group's title, its table (markdown) and the footnote that says what ± and
    "vs next" mean."""
    shown = shown_columns(group, columns)
    lead = ["vs next"] if any(row["p_next"] is not None for row in group.rows) else []
    header = ["configuration", "seeds", "diverged", "failed", "stopped", *shown, *lead,
              "images/s", "health warnings"]
    lines = [group_title(group, asked), "", "| " + " | ".join(header) + " |",
             "|" + " --- |" * len(header)]
    for row in group.rows:
        cells = [f"`{row['config']}`", str(row["seeds"]), str(row["diverged"]), str(row["failed"]),
                 str(row["stopped"]), *(_cell(row.get(n, NOT_LOGGED)) for n in shown),
                 *(row[c] for c in lead), _rate(row["images/s"]), row["health"]]
        lines.append("| " + " | ".join(cells) + " |")
    footnote = METRIC_FOOTNOTE + (" " + LEAD_FOOTNOTE.format(metric=group.metric) if lead else "")
    return [*lines, "", footnote]


def write_csv(path: Path, groups: list[Group], names: list[str]) -> None:
    """Every configuration with every metric's mean, std and ci95, its group, what ranked
    it (empty where unranked) and its lead's p-value against the next row (NaN where
    untestable, empty for the last)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config", "dataset", "extractor", "ranked_by", "seeds", "finished",
                         "diverged", "failed", "stopped",
                         *(f"{n}_{s}" for n in names for s in ("mean", "std", "ci95")),
                         "images_per_s", "health_warnings", "p_vs_next"])
        for group in groups:
            for row in group.rows:
                writer.writerow([
                    row["config"], group.dataset or "", group.extractor or "",
                    group.metric if group.ranked else "", row["seeds"], row["finished"],
                    row["diverged"], row["failed"], row["stopped"],
                    *(v for n in names for v in row.get(n, NOT_LOGGED)[:3]), row["images/s"],
                    row["health"], "" if row["p_next"] is None else row["p_next"]])


def write_reports(sweep: Path, groups: list[Group], jobs: list[Job],
                  columns: list[str] | None = None, asked: str | None = None) -> list[Path]:
    n = sum(len(g.rows) for g in groups)
    lines = [f"# Sweep {sweep.name}: {n} configuration{'s' * (n != 1)}"
             + (f" in {len(groups)} groups (dataset, extractor), each ranked on its own"
                if len(groups) > 1 else "")]
    for group in groups:
        lines += ["", *group_table(group, columns, asked)]
    problems = [j for j in jobs if j.status != "finished"]
    if problems:
        lines += ["", "Jobs that did not finish:", ""]
        lines += [f"- `{j.path.name}`: {_status(j)}{_why(j)}" for j in problems]
    lines += ["", "Every job:", "", "| job | seed | status | generator steps |",
              "| --- | --- | --- | --- |"]
    lines += [f"| `{j.path.name}` | {j.seed} | {_status(j)} | {j.g_steps} |" for j in jobs]
    md = sweep / "report.md"
    md.write_text("\n".join(lines) + "\n")
    out = sweep / "report.csv"
    write_csv(out, groups, sorted({name for g in groups for name in g.names}))
    return [md, out, *plot_curves(sweep, groups)]


def _seed_curves(jobs: list[Job], metric: str) -> dict[str, dict[int, list[float]]]:
    """`metric` per configuration per generator step, one value per seed."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        for step, value in job.curves.get(metric, []):
            series[job.config][step].append(value)
    return series


def plot_curves(sweep: Path, groups: list[Group]) -> list[Path]:
    """report_<metric>.png for each ranking metric: the metric against generator steps,
    one panel per group it ranks (their scales differ), one line per configuration (the
    mean over seeds, the lowest to the highest seed shaded)."""
    panels: dict[str, list[tuple[Group, dict]]] = defaultdict(list)
    for group in groups:
        series = _seed_curves(group.jobs, group.metric)
        if series:
            panels[group.metric].append((group, series))
    if not panels:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for metric, plotted in panels.items():
        fig, axes = plt.subplots(1, len(plotted), figsize=(8 * len(plotted), 5), squeeze=False)
        for ax, (group, series) in zip(axes[0], plotted, strict=True):
            for config, points in sorted(series.items()):
                steps = sorted(points)
                mean = [statistics.fmean(points[s]) for s in steps]
                line = ax.plot(steps, mean, marker="o", markersize=3, label=config)[0]
                ax.fill_between(steps, [min(points[s]) for s in steps],
                                [max(points[s]) for s in steps], color=line.get_color(), alpha=0.2)
            ax.set_xlabel("generator steps")
            ax.set_ylabel(metric)
            ax.set_title(f"{sweep.name}: {metric}, {group.heading}", fontsize=9)
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = sweep / f"report_{metric.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


class NothingToRank(KeyError):
    """No job of the sweep finished; report.md still lists every job and why."""


def report(sweep: str | Path, metric: str | None = None,
           columns: list[str] | None = None) -> tuple[list[dict], list[str], list[Path]]:
    """Writes `sweep`'s report.md, report.csv and plots; returns every configuration's
    row (group after group, each ranked by `metric`, by default its first quality
    metric), every metric's name, and the files written. `columns`: report.md's metric
    columns; ["all"] for every one; None for the ranking metric and its companions."""
    sweep = Path(sweep).expanduser()
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such directory")
    jobs = collect(sweep)
    if not jobs:
        raise FileNotFoundError(f"{sweep}: no job directories (with .hydra/overrides.yaml)")
    logged = {name for job in jobs for name in job.finals}
    metric = as_logged(metric, logged) if metric is not None else None
    columns = ["all" if c.lower() == "all" else as_logged(c, logged) for c in columns or []] or None
    groups = rank(jobs, metric)
    names = sorted({name for g in groups for name in g.names})
    if not any(j.status == "finished" for j in jobs):  # say what each job did
        write_reports(sweep, groups, jobs)
        raise NothingToRank(f"no job finished, nothing to rank ({len(jobs)} jobs: "
                            f"{', '.join(sorted({_status(j) for j in jobs}))})")
    if metric is not None and metric not in names:
        raise KeyError(f"metric {metric} not in the jobs' results; available: {', '.join(names)}")
    unknown = sorted(set(columns or []) - set(names) - {"all"})
    if unknown:
        raise KeyError(f"--columns {', '.join(unknown)} not in the jobs' results; available: "
                       f"{', '.join(names)}")
    written = write_reports(sweep, groups, jobs, columns, metric)
    return [row for g in groups for row in g.rows], names, written
