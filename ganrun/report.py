"""`ganrun-report <multirun dir>`: one ranked table of a sweep.

Jobs that differ only by `seed` are one configuration. For each: the number of
seeds, how many diverged, failed or were stopped (interrupted, or killed and so
still "running"), mean ± std over seeds of every final metric, and images per
second; then every job with its status. Writes report.md, report.csv and report_<metric>.png
(the metric against generator steps, one line per configuration, the seed
spread shaded) into the sweep directory, and prints the table. The health
columns (health/collapsed_share, health/grad_norm_g, ...) are the last logged
values; "health warnings" counts the jobs of each configuration that warned of
each failure (callbacks.health).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ganrun.outputs import read_json, restore_non_finite

# Lower is better for these; higher for the rest.
LOWER_IS_BETTER = {"fid", "kid", "class_kl", "reverse_kl", "loss/d", "loss/g"}
# The default ranking metric: the first of these the jobs logged, else loss/g.
QUALITY = ("fid", "kid", "modes", "classes_covered", "is")
# Step statistics on each loss's own scale: no ranking across losses by them.
LOSS_SCALED = {"loss/d", "loss/g", "D/real", "D/fake"}
# Jobs that neither finished nor broke: a signal stopped them ("interrupted", with a
# checkpoint to resume from), or they were killed outright and still say "running".
STOPPED = ("interrupted", "running")


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
    pid: int | None = None  # of a job that says "running"


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_job(path: Path) -> Job | None:
    overrides_file = path / ".hydra" / "overrides.yaml"
    if not overrides_file.is_file():
        return None
    overrides = yaml.safe_load(overrides_file.read_text()) or []
    seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "seed"), "0")
    config = ",".join(sorted(o for o in overrides if o.split("=", 1)[0] != "seed")) or "(defaults)"
    metrics_file = path / "metrics.json"
    saved = read_json(metrics_file) if metrics_file.is_file() else {
        "status": "failed", "reason": "no metrics.json (killed before it was written)"}
    health = {f"health/{k}": v for k, v in (saved.get("health") or {}).items() if k != "warnings"}
    finals = {k: v for k, v in {**saved.get("losses", {}), **saved.get("metrics", {}),
                                **health}.items() if _number(v) is not None}
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    log = path / "metrics.jsonl"
    if log.is_file():
        for line in log.read_text().splitlines():
            record = restore_non_finite(json.loads(line))
            for name, value in record["metrics"].items():
                if _number(value) is not None:
                    curves[name].append((record["step"], float(value)))
    warnings = [w.get("kind", "?") for w in (saved.get("health") or {}).get("warnings", [])]
    return Job(path, config, seed, saved.get("status", "failed"), saved.get("reason"),
               int(saved.get("g_steps") or 0), {k: float(v) for k, v in finals.items()},
               _number(saved.get("images_per_second")), dict(curves), warnings,
               pid=saved.get("pid"), loss=(saved.get("choices") or {}).get("loss"))


def collect(sweep: Path) -> list[Job]:
    def job_number(p: Path) -> tuple[int, str]:  # 2_... before 10_...
        head = p.name.split("_", 1)[0]
        return (int(head) if head.isdigit() else 1 << 30, p.name)

    jobs = [read_job(p) for p in sorted(sweep.iterdir(), key=job_number) if p.is_dir()]
    return [j for j in jobs if j is not None]


def _mean_std(values: list[float]) -> tuple[float, float]:
    if not values:
        return math.nan, math.nan
    if not all(math.isfinite(v) for v in values):  # an infinite reverse KL, say
        return sum(values) / len(values), math.nan
    # One seed measures no spread: NaN, not a 0 that would read as a measured one.
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan


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


def summarise(jobs: list[Job], metric: str) -> tuple[list[dict], list[str]]:
    """One row per configuration, sorted by `metric` (best first; NaN last); in sweep
    order when `metric` is on each loss's own scale and the losses differ."""
    by_config: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_config[job.config].append(job)
    names = sorted({k for j in jobs if j.status == "finished" for k in j.finals})
    rows = []
    for config, group in by_config.items():
        finished = [j for j in group if j.status == "finished"]
        row = {"config": config, "seeds": len(group), "finished": len(finished),
               "diverged": sum(j.status == "diverged" for j in group),
               "failed": sum(j.status not in ("finished", "diverged", *STOPPED) for j in group),
               "stopped": sum(j.status in STOPPED for j in group)}
        for name in names:
            row[name] = _mean_std([j.finals[name] for j in finished if name in j.finals])
        speeds = [j.images_per_second for j in finished if j.images_per_second]
        row["images/s"] = statistics.fmean(speeds) if speeds else math.nan
        row["health"] = health_cell(group)
        rows.append(row)
    sign = 1 if metric in LOWER_IS_BETTER else -1

    def key(row):
        value = row.get(metric, (math.nan, math.nan))[0]
        return (math.isnan(value), sign * value if not math.isnan(value) else 0.0)

    return (sorted(rows, key=key) if comparable(jobs, metric) else rows), names


def _cell(value: tuple[float, float]) -> str:
    """"mean ± std"; the mean alone for one seed or an infinite value; — for none."""
    mean, std = value
    if math.isnan(mean):
        return "—"
    if math.isinf(mean):
        return "inf" if mean > 0 else "-inf"
    return f"{mean:.4g}" if math.isnan(std) else f"{mean:.4g} ± {std:.2g}"


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def _status(job: Job) -> str:
    """A job's status; a running one (or one killed outright) with its pid."""
    return f"running (pid {job.pid})" if job.status == "running" and job.pid else job.status


def write_reports(sweep: Path, rows: list[dict], names: list[str], metric: str,
                  jobs: list[Job], columns: list[str] | None = None) -> list[Path]:
    shown = list(columns) if columns else names  # in the order asked; report.csv has all
    header = ["configuration", "seeds", "diverged", "failed", "stopped", *shown, "images/s",
              "health warnings"]
    if comparable(jobs, metric):
        title = (f"sorted by {metric} ({'lower' if metric in LOWER_IS_BETTER else 'higher'} "
                 "is better)")
    else:
        title = (f"not ranked: {metric} is on each loss's own scale and the losses differ; "
                 "log a quality metric (metrics.names: fid, kid, modes, ...) to rank them")
    lines = [f"# Sweep {sweep.name}: {len(rows)} configurations, {title}", "",
             "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in rows:
        cells = [f"`{row['config']}`", str(row["seeds"]), str(row["diverged"]), str(row["failed"]),
                 str(row["stopped"]), *(_cell(row[n]) for n in shown), _rate(row["images/s"]),
                 row["health"]]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [j for j in jobs if j.status != "finished"]
    if problems:
        lines += ["", "Jobs that did not finish:", ""]
        lines += [f"- `{j.path.name}`: {_status(j)}" + (f": {j.reason}" if j.reason else "")
                  for j in problems]
    lines += ["", "Every job:", "", "| job | seed | status | generator steps |",
              "| --- | --- | --- | --- |"]
    lines += [f"| `{j.path.name}` | {j.seed} | {_status(j)} | {j.g_steps} |" for j in jobs]
    md = sweep / "report.md"
    md.write_text("\n".join(lines) + "\n")
    out = sweep / "report.csv"
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["config", "seeds", "finished", "diverged", "failed", "stopped",
                         *(f"{n}_{s}" for n in names for s in ("mean", "std")), "images_per_s",
                         "health_warnings"])
        for row in rows:
            writer.writerow([row["config"], row["seeds"], row["finished"], row["diverged"],
                             row["failed"], row["stopped"], *(v for n in names for v in row[n]),
                             row["images/s"], row["health"]])
    written = [md, out]
    plot = plot_curves(sweep, jobs, metric)
    if plot:
        written.append(plot)
    return written


def plot_curves(sweep: Path, jobs: list[Job], metric: str) -> Path | None:
    """`metric` against generator steps: the mean over seeds per configuration, with
    the spread between the lowest and highest seed shaded."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        for step, value in job.curves.get(metric, []):
            series[job.config][step].append(value)
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for config, points in sorted(series.items()):
        steps = sorted(points)
        mean = [statistics.fmean(points[s]) for s in steps]
        line = ax.plot(steps, mean, marker="o", markersize=3, label=config)[0]
        ax.fill_between(steps, [min(points[s]) for s in steps], [max(points[s]) for s in steps],
                        color=line.get_color(), alpha=0.2)
    ax.set_xlabel("generator steps")
    ax.set_ylabel(metric)
    ax.set_title(f"{sweep.name}: {metric}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = sweep / f"report_{metric.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class NothingToRank(KeyError):
    """No job of the sweep finished; report.md still lists every job and why."""


def report(sweep: str | Path, metric: str = "fid",
           columns: list[str] | None = None) -> tuple[list[dict], list[str], list[Path]]:
    sweep = Path(sweep).expanduser()
    if not sweep.is_dir():
        raise FileNotFoundError(f"{sweep}: no such directory")
    jobs = collect(sweep)
    if not jobs:
        raise FileNotFoundError(f"{sweep}: no job directories (with .hydra/overrides.yaml)")
    rows, names = summarise(jobs, metric)
    if not any(j.status == "finished" for j in jobs):  # nothing to rank: say what each job did
        write_reports(sweep, rows, [], metric, jobs)
        raise NothingToRank(f"no job finished, nothing to rank ({len(jobs)} jobs: "
                            f"{', '.join(sorted({_status(j) for j in jobs}))})")
    if metric not in names:
        raise KeyError(f"metric {metric} not in the jobs' results; available: {', '.join(names)}")
    unknown = sorted(set(columns or []) - set(names))
    if unknown:
        raise KeyError(f"--columns {', '.join(unknown)} not in the jobs' results; available: "
                       f"{', '.join(names)}")
    return rows, names, write_reports(sweep, rows, names, metric, jobs, columns)


def main() -> None:
    parser = argparse.ArgumentParser(prog="ganrun-report", description=__doc__.split("\n")[0])
    parser.add_argument("sweep", help="a multirun directory (outputs/multiruns/<stamp>)")
    parser.add_argument("--metric", default=None,
                        help="metric to sort and plot by (default: the first of fid, kid, modes, "
                             "classes_covered, is logged, else loss/g)")
    parser.add_argument("--columns", default=None,
                        help="metrics shown in report.md, comma-separated (default: all; "
                             "report.csv always has all)")
    args = parser.parse_args()
    columns = args.columns.split(",") if args.columns else None
    try:
        metric = args.metric
        if metric is None:
            jobs = collect(Path(args.sweep).expanduser()) if Path(args.sweep).is_dir() else []
            logged = {k for j in jobs for k in j.finals}
            metric = next((m for m in QUALITY if m in logged), "loss/g")
        rows, names, written = report(args.sweep, metric, columns)
    except (FileNotFoundError, KeyError) as e:
        if isinstance(e, NothingToRank):  # the job list is still worth reading
            print((Path(args.sweep) / "report.md").read_text())
        print(f"ganrun-report: error: {str(e).strip(chr(39) + chr(34))}", file=sys.stderr)
        sys.exit(1)
    print((Path(args.sweep) / "report.md").read_text())
    print("written: " + ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
