"""report.html (`ganrun-report <sweep> --html`): a sweep on one page that needs no
server and no network (the pictures inline, the curves as inline SVG, no script).

For each group of jobs evaluated alike: its ranked table (mean ± 95% CI over seeds,
"vs next"), its metrics against generator steps (a curve per configuration, the 95%
confidence interval of the mean over seeds shaded), the last sample grid (or 2-D
scatter) of each configuration's lowest seed side by side, and the health warnings
of each configuration's jobs. Then the samples over training (report_strips.png) and
every job with its status.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from ganrun.analysis.jobs import Job, status_text, why_not_finished
from ganrun.analysis.plots import draw_curves, lowest_seed, pyplot, seed_curves

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1400px; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1em; margin: 1.2em 0 .4em; }
table { border-collapse: collapse; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td.config, td.text { text-align: left; font-family: monospace; }
tr.best td { background: #eef7ee; }
.note { color: #555; font-size: .9em; max-width: 60em; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figure svg { width: 640px; height: auto; }
figure img { max-width: 320px; image-rendering: pixelated; border: 1px solid #ddd; }
figure.strips img { max-width: 100%; }
figcaption { font-size: .85em; font-family: monospace; max-width: 320px; overflow-wrap: anywhere; }
ul.health li { margin: .2em 0; } .kind { font-weight: 600; }
"""


def write_html(sweep: Path, groups: list, jobs: list[Job], table, strips: Path | None) -> Path:
    """report.html in `sweep`: `table(group)` gives a group's title, header and rows as
    report.md shows them (ganrun.analysis.report.table_cells); `strips` the
    report_strips.png written, if any."""
    n = sum(len(g.rows) for g in groups)
    body = [f"<h1>Sweep {_e(sweep.name)}: {n} configuration{'s' * (n != 1)}, "
            f"{len(jobs)} job{'s' * (len(jobs) != 1)}</h1>",
            f"<p class='note'>{_e(str(sweep))}. Written by ganrun-report --html.</p>"]
    for number, group in enumerate(groups):
        body += _group(sweep, number, group, table(group))
    if strips is not None:
        body += ["<h2>Samples over training</h2>",
                 "<p class='note'>A row per configuration (its lowest seed's samples/strip.png), "
                 "a panel per sampling step.</p>",
                 f"<figure class='strips'>{_img(strips, 'samples over training')}</figure>"]
    body += _jobs(jobs)
    page = ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>ganrun sweep {_e(sweep.name)}</title><style>{STYLE}</style></head>"
            "<body>\n" + "\n".join(body) + "\n</body></html>\n")
    path = sweep / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _group(sweep: Path, number: int, group, cells: tuple[str, list[str], list[list[str]], str]
           ) -> list[str]:
    title, header, rows, footnote = cells
    out = [f"<section class='group' id='group-{number}'>", f"<h2>{_e(title)}</h2>",
           f"<table class='ranked' data-group='{number}'><thead><tr>"
           + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr></thead><tbody>"]
    for i, row in enumerate(rows):
        tds = "".join(f"<td class='{'config' if j == 0 else 'text' if h == 'health warnings' else ''}'>"
                      f"{_e(cell.strip('`') if j == 0 else cell)}</td>"
                      for j, (h, cell) in enumerate(zip(header, row, strict=True)))
        out.append(f"<tr{' class=best' if i == 0 and group.ranked else ''}>{tds}</tr>")
    out += ["</tbody></table>", f"<p class='note'>{_e(footnote)}</p>"]
    out += _curves(sweep, group, [h for h in header if _has_curve(group, h)])
    out += _samples(group)
    out += _health(group)
    return [*out, "</section>"]


def _has_curve(group, metric: str) -> bool:
    return any(metric in job.curves for job in group.jobs)


def _curves(sweep: Path, group, metrics: list[str]) -> list[str]:
    if not metrics:
        return []
    out = ["<h3>Against generator steps</h3>",
           "<p class='note'>A line per configuration: the mean over its seeds at each "
           "evaluation, its 95% confidence interval (Student t) shaded.</p>",
           "<div class='figures'>"]
    for metric in metrics:
        out.append(f"<figure class='curve' data-metric='{_e(metric)}'>"
                   f"{_svg(seed_curves(group.jobs, metric), metric, group.heading)}</figure>")
    return [*out, "</div>"]


def _svg(series, metric: str, heading: str) -> str:
    """The curves as an inline <svg> element (text as text, no fonts embedded)."""
    import matplotlib

    plt = pyplot()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": metric}):
        fig, ax = plt.subplots(figsize=(7, 4.2))
        draw_curves(ax, series, metric, f"{metric}, {heading}")
        fig.tight_layout()
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _last_grid(job: Job) -> tuple[Path, int] | None:
    """A job's last sample grid (or 2-D scatter): samples/step_<N>.png of the highest N."""
    found = [(int(m.group(1)), p) for p in (job.path / "samples").glob("step_*.png")
             if (m := re.fullmatch(r"step_(\d+)\.png", p.name))]
    if not found:
        return None
    step, path = max(found)
    return path, step


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>"


def _samples(group) -> list[str]:
    figures = []
    for row in group.rows:
        job = lowest_seed([j for j in group.jobs if j.config == row["config"]])
        grid = _last_grid(job)
        if grid is None:
            continue
        path, step = grid
        figures.append(f"<figure class='sample'>{_img(path, row['config'])}<figcaption>"
                       f"{_e(row['config'])} (seed {_e(job.seed)}), step {step}</figcaption></figure>")
    if not figures:
        return []
    return ["<h3>Last samples</h3>",
            "<p class='note'>Each configuration's lowest seed, its last sample grid "
            "(2-D data: the samples over the data).</p>",
            "<div class='figures'>", *figures, "</div>"]


def _health(group) -> list[str]:
    out = ["<h3>Health warnings</h3>"]
    items = []
    for row in group.rows:
        jobs = [j for j in group.jobs if j.config == row["config"]]
        warned = [(j, w) for j in jobs for w in j.warned]
        if not warned:
            items.append(f"<li><code>{_e(row['config'])}</code>: none</li>")
            continue
        lines = "".join(
            f"<li>seed {_e(j.seed)}, step {_e(w.get('step', '?'))}: <span class='kind'>"
            f"{_e(str(w.get('kind', '?')).replace('_', ' '))}</span>: {_e(w.get('message', ''))}"
            + (f" (until step {_e(w['ended_at'])})" if w.get("ended_at") is not None else "")
            + "</li>" for j, w in warned)
        items.append(f"<li><code>{_e(row['config'])}</code>: {_e(row['health'])}<ul>{lines}</ul></li>")
    return [*out, f"<ul class='health'>{''.join(items)}</ul>"]


def _jobs(jobs: list[Job]) -> list[str]:
    rows = "".join(
        f"<tr><td class='config'>{_e(j.path.name)}</td><td>{_e(j.seed)}</td>"
        f"<td class='text'>{_e('; '.join([status_text(j) + why_not_finished(j), *j.notes]))}</td>"
        f"<td>{j.g_steps}</td></tr>"
        for j in jobs)
    return ["<h2>Every job</h2>", "<table class='jobs'><thead><tr><th>job</th><th>seed</th>"
            "<th>status</th><th>generator steps</th></tr></thead>", f"<tbody>{rows}</tbody></table>"]
