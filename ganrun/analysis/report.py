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
metric's mean, std and CI, the group, the p-values), report_<metric>.png (the
metric against generator steps, one panel per group, one line per configuration,
the 95% confidence interval of the mean over seeds shaded) and report_strips.png (samples over training, a row per
configuration: its lowest seed's strip) into the sweep directory, and prints
report.md; with --html also report.html, all of it on one page (ganrun.analysis.html). The health columns (health/collapsed_share, health/grad_norm_g, ...) are
the last logged values; "health warnings" counts the jobs of each configuration that
warned of each failure (callbacks.health). Which way is better, what ranks a group by default and what
report.md shows beside it are the metrics' own declarations (ganrun.metrics.registry);
the jobs are read by ganrun.analysis.jobs.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ganrun.analysis.jobs import STOPPED, Job, collect, status_text, why_not_finished
from ganrun.analysis.plots import plot_curves, plot_strips, strip_rows
from ganrun.analysis.stats import ci95_half_width, welch_p
from ganrun.metrics.registry import METRICS

# The losses: lower is better (the metrics say which way for theirs; higher for the
# rest), and what report.md shows beside each when it ranks.
LOSS_LOWER = {"loss/d", "loss/g"}
LOSS_COMPANIONS = {"loss/g": ("loss/d",), "loss/d": ("loss/g",)}
# Step statistics on each loss's own scale: no ranking across losses by them.
LOSS_SCALED = {"loss/d", "loss/g", "D/real", "D/fake"}
# A row's lead over the next is significant below this p (Welch, two-sided).
ALPHA = 0.05
METRIC_FOOTNOTE = ("± : 95% confidence interval of the mean over seeds, Student t "
                   "(one seed: its value alone; inf: infinite; —: none).")
LEAD_FOOTNOTE = ("vs next: Welch's two-sided t-test of this row's {metric} against the next "
                 "row's; n.s.: p ≥ 0.05, or a row with one seed or an infinite value, so the "
                 "seeds run do not separate the two.")


class Spread(NamedTuple):
    """One metric over a configuration's finished seeds. std and ci95 (the half-width
    of the mean's 95% confidence interval, Student t) are NaN for one seed or an
    infinite value: no spread measured, rather than a 0 that would read as one."""
    mean: float
    std: float
    ci95: float
    values: tuple[float, ...]


NOT_LOGGED = Spread(math.nan, math.nan, math.nan, ())


def as_logged(name: str, names) -> str:
    """A metric name as typed (FID, Loss/G) as the jobs logged it (fid, loss/g); as typed
    when they logged no such metric."""
    if name in names:
        return name
    return next((n for n in sorted(names) if n.lower() == name.lower()), name)


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
    """The first quality metric (a metric's declared `quality`) in `names`, else loss/g."""
    return next((m for m in METRICS.quality() if m in names), "loss/g")


def lower_is_better(name: str) -> bool:
    return name in LOSS_LOWER or METRICS.direction(name) == "lower"


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
    metric, sign = group.metric, 1 if lower_is_better(group.metric) else -1

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
    if math.isnan(value.ci95):
        return mean
    if value.ci95 <= 1e-9 * abs(value.mean):  # seeds equal but for rounding: no spread
        return f"{mean} ± 0"
    return f"{mean} ± {_digits(value.ci95, 2)}"


def _rate(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.0f}"


def shown_columns(group: Group, columns: list[str] | None) -> list[str]:
    """report.md's metric columns for `group`: those asked, in their order; every one
    for "all"; by default its ranking metric and the companions of it that it logged."""
    if columns and "all" in columns:
        return group.names
    if columns:
        return list(columns)
    companions = {**METRICS.quality(), **LOSS_COMPANIONS}.get(group.metric, ())
    return [m for m in (group.metric, *companions) if m in group.names]


def group_title(group: Group, asked: str | None) -> str:
    n = len(group.rows)
    title = f"{group.heading}: {n} configuration{'s' * (n != 1)}, "
    if not group.names:
        return title + "none finished, nothing to rank"
    if not comparable(group.jobs, group.metric):
        return title + (f"not ranked: {group.metric} is on each loss's own scale and the losses "
                        "differ; log a quality metric (metrics.names: fid, kid, modes, ...) to "
                        "rank them")
    better = "lower" if lower_is_better(group.metric) else "higher"
    title += f"sorted by {group.metric} ({better} is better)"
    return title + (f"; {asked} is not logged here" if asked and asked != group.metric else "")


def table_cells(group: Group, columns: list[str] | None, asked: str | None
                ) -> tuple[str, list[str], list[list[str]], str]:
    """A group's title, its table's header and rows (each cell as report.md shows it)
    and the footnote that says what ± and "vs next" mean: report.md's and report.html's."""
    shown = shown_columns(group, columns)
    lead = ["vs next"] if any(row["p_next"] is not None for row in group.rows) else []
    header = ["configuration", "seeds", "diverged", "failed", "stopped", *shown, *lead,
              "images/s", "health warnings"]
    rows = [[f"`{row['config']}`", str(row["seeds"]), str(row["diverged"]), str(row["failed"]),
             str(row["stopped"]), *(_cell(row.get(n, NOT_LOGGED)) for n in shown),
             *(row[c] for c in lead), _rate(row["images/s"]), row["health"]]
            for row in group.rows]
    footnote = METRIC_FOOTNOTE + (" " + LEAD_FOOTNOTE.format(metric=group.metric) if lead else "")
    return group_title(group, asked), header, rows, footnote


def group_table(group: Group, columns: list[str] | None, asked: str | None) -> list[str]:
    """A group's title, its table (markdown) and its footnote."""
    title, header, rows, footnote = table_cells(group, columns, asked)
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows]
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
                  columns: list[str] | None = None, asked: str | None = None,
                  html: bool = False) -> list[Path]:
    n = sum(len(g.rows) for g in groups)
    lines = [f"# Sweep {sweep.name}: {n} configuration{'s' * (n != 1)}"
             + (f" in {len(groups)} groups (dataset, extractor), each ranked on its own"
                if len(groups) > 1 else "")]
    for group in groups:
        lines += ["", *group_table(group, columns, asked)]
    strips, no_strip = strip_rows(groups)
    if strips:
        lines += ["", "Samples over training: `report_strips.png`, a row per configuration (its "
                  "lowest seed's samples/strip.png), a panel per sampling step.", "",
                  "![samples over training](report_strips.png)"]
    if strips and no_strip:  # with no strip at all (runs without samples): nothing to say
        lines += ["", "Left out of report_strips.png:", "", *(f"- {note}" for note in no_strip)]
    problems = [j for j in jobs if j.status != "finished"]
    if problems:
        lines += ["", "Jobs that did not finish:", ""]
        lines += [f"- `{j.path.name}`: {status_text(j)}{why_not_finished(j)}" for j in problems]
    damaged = [(j, note) for j in jobs for note in j.notes]
    if damaged:  # a crash or a full disk mid-write: what was skipped
        lines += ["", "Files that could not be read (skipped):", ""]
        lines += [f"- `{j.path.name}`: {note}" for j, note in damaged]
    lines += ["", "Every job:", "", "| job | seed | status | generator steps |",
              "| --- | --- | --- | --- |"]
    lines += [f"| `{j.path.name}` | {j.seed} | {status_text(j)} | {j.g_steps} |" for j in jobs]
    md = sweep / "report.md"
    md.write_text("\n".join(lines) + "\n")
    out = sweep / "report.csv"
    write_csv(out, groups, sorted({name for g in groups for name in g.names}))
    figure = plot_strips(sweep, strips)
    written = [md, out, *plot_curves(sweep, groups), *([figure] if figure else [])]
    if html:
        from ganrun.analysis.html import write_html

        written.append(write_html(sweep, groups, jobs,
                                  lambda group: table_cells(group, columns, asked), figure))
    return written


class NothingToRank(KeyError):
    """No job of the sweep finished; report.md still lists every job and why."""


def report(sweep: str | Path, metric: str | None = None, columns: list[str] | None = None,
           html: bool = False) -> tuple[list[dict], list[str], list[Path]]:
    """Writes `sweep`'s report.md, report.csv and plots (and report.html with `html`);
    returns every configuration's row (group after group, each ranked by `metric`, by
    default its first quality metric), every metric's name, and the files written.
    `columns`: report.md's metric columns; ["all"] for every one; None for the ranking
    metric and its companions."""
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
        write_reports(sweep, groups, jobs, html=html)
        raise NothingToRank(f"no job finished, nothing to rank ({len(jobs)} jobs: "
                            f"{', '.join(sorted({status_text(j) for j in jobs}))})")
    if metric is not None and metric not in names:
        raise KeyError(f"metric {metric} not in the jobs' results; available: {', '.join(names)}")
    unknown = sorted(set(columns or []) - set(names) - {"all"})
    if unknown:
        raise KeyError(f"--columns {', '.join(unknown)} not in the jobs' results; available: "
                       f"{', '.join(names)}")
    written = write_reports(sweep, groups, jobs, columns, metric, html)
    return [row for g in groups for row in g.rows], names, written
