"""report_<metric>.png: a sweep's ranking metrics against generator steps, one panel
per group of jobs evaluated alike, one line per configuration, the seeds' spread
shaded."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ganrun.analysis.jobs import Job


def _seed_curves(jobs: list[Job], metric: str) -> dict[str, dict[int, list[float]]]:
    """`metric` per configuration per generator step, one value per seed."""
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for job in jobs:
        for step, value in job.curves.get(metric, []):
            series[job.config][step].append(value)
    return series


def plot_curves(sweep: Path, groups: list) -> list[Path]:
    """report_<metric>.png for each ranking metric: the metric against generator steps,
    one panel per group it ranks (their scales differ), one line per configuration (the
    mean over seeds, the lowest to the highest seed shaded)."""
    panels: dict[str, list[tuple]] = defaultdict(list)  # report.Group, its curves
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
