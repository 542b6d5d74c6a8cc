"""A sweep's figures. report_<metric>.png: its ranking metrics against generator steps,
one panel per group of jobs evaluated alike, one line per configuration, the 95%
confidence interval of its mean over seeds shaded. report_strips.png: samples over
training, one row per configuration (its lowest seed's strip, ganrun.strips)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ganrun.analysis.jobs import Job


def seed_curves(jobs: list[Job], metric: str) -> dict[str, dict[int, list[float]]]:
    """`metric` per configuration per generator step, one value per seed."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        for step, value in job.curves.get(metric, []):
            series[job.config][step].append(value)
    return series


def draw_curves(ax, series: dict[str, dict[int, list[float]]], metric: str, title: str) -> None:
    """One line per configuration of `series` (the mean over its seeds against
    generator steps), the 95% confidence interval of that mean shaded (Student t;
    none where a step has one seed)."""
    import math

    from ganrun.analysis.stats import ci95_half_width

    for config, points in sorted(series.items()):
        steps = sorted(points)
        mean = [statistics.fmean(points[s]) for s in steps]
        line = ax.plot(steps, mean, marker="o", markersize=3, label=config)[0]
        half = [ci95_half_width(points[s]) for s in steps]
        if any(math.isfinite(h) for h in half):
            half = [h if math.isfinite(h) else 0.0 for h in half]
            ax.fill_between(steps, [m - h for m, h in zip(mean, half, strict=True)],
                            [m + h for m, h in zip(mean, half, strict=True)],
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("generator steps")
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)


def plot_curves(sweep: Path, groups: list) -> list[Path]:
    """report_<metric>.png for each ranking metric: the metric against generator steps,
    one panel per group it ranks (their scales differ), one line per configuration (the
    mean over seeds, its 95% confidence interval shaded)."""
    panels: dict[str, list[tuple]] = defaultdict(list)  # report.Group, its curves
    for group in groups:
        series = seed_curves(group.jobs, group.metric)
        if series:
            panels[group.metric].append((group, series))
    if not panels:
        return []
    plt = pyplot()
    written = []
    for metric, plotted in panels.items():
        fig, axes = plt.subplots(1, len(plotted), figsize=(8 * len(plotted), 5), squeeze=False)
        for ax, (group, series) in zip(axes[0], plotted, strict=True):
            draw_curves(ax, series, metric, f"{sweep.name}: {metric}, {group.heading}")
        fig.tight_layout()
        path = sweep / f"report_{metric.replace('/', '_')}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def pyplot():
    """matplotlib's pyplot, drawing off screen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def lowest_seed(jobs: list[Job]) -> Job:
    """The job of the lowest seed: numbers by value (2 before 10), any other after."""
    def order(job: Job) -> tuple:
        number = job.seed.lstrip("-").isdigit()
        return (0, int(job.seed), "") if number else (1, 0, job.seed)

    return min(jobs, key=order)


def _last_step(job: Job) -> int | None:
    """The last step a finished job's strip shows; None (every panel) for one that
    stopped, whose last logged step may come before its last panel."""
    return job.g_steps if job.status == "finished" and job.g_steps else None


def strip_rows(groups: list) -> tuple[list[tuple[str, Job]], list[str]]:
    """The job whose strip stands for each configuration, in the tables' order (its
    lowest seed), named "<configuration> (seed <S>)"; and a note for each configuration
    whose lowest seed has no strip, to say in report.md."""
    from ganrun.strips import PANEL_DIR, panel_steps

    rows, notes = [], []
    for group in groups:
        for row in group.rows:
            job = lowest_seed([j for j in group.jobs if j.config == row["config"]])
            if panel_steps(job.path / "samples", _last_step(job)):
                rows.append((f"{row['config']} (seed {job.seed})", job))
            else:
                notes.append(f"`{row['config']}`: no strip (`{job.path.name}` has no "
                             f"samples/{PANEL_DIR}/: no sampling step reached, "
                             "~callbacks.samples, or a ganrun before strips)")
    return rows, notes


def plot_strips(sweep: Path, rows: list[tuple[str, Job]]) -> Path | None:
    """report_strips.png: each row's strip (samples/strip_panels/ read back, as its run
    composes samples/strip.png at its last step) below its name, one under another;
    None without rows."""
    if not rows:
        return None
    from ganrun.samples import save_png
    from ganrun.strips import read_strip_panels, side_by_side, stacked

    picture = stacked([(name, side_by_side(read_strip_panels(job.path / "samples",
                                                             _last_step(job))))
                       for name, job in rows])
    path = sweep / "report_strips.png"
    save_png(picture, path)
    return path
