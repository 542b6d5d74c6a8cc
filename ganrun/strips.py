"""Samples over training, side by side, as the mode-collapse papers print them: one
panel per sampling step (samples/strip_panels/step_<N>.png), and strips of panels
(a run's samples/strip.png; a row per configuration in a sweep's report_strips.png).

A panel of 2-D data shows the fixed-noise samples (black dots) over D's output on the
plane (a heat map on a 64 x 64 grid of points), the mode centres marked (blue
crosses). Its square is centred on the origin, the outermost mode centre's largest
coordinate plus 30% on each side; samples outside it are not drawn. Where the loss
reads D's output as a logit (`module.probability_outputs`: the minimax family and
the relativistic average loss, as D/real and D/fake are logged), the map is
sigmoid(D(x)), D's probability of "real", on one scale shared by every panel, 0
(pale yellow) to 1 (red); otherwise it is D's raw score, which only means something
relative to other scores and drifts over training, so each panel is scaled to its
own range, written in its title. A loss that never trains D's output (one on D's
features or on raw samples) gets no heat map. A panel of images is a 4 x 4 grid of
fixed-noise samples spread evenly over the grid's (so every class of a conditional
run's grid shows), enlarged to about 192 px.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ganrun.samples import evaluating, image_grid

PANEL_DIR = "strip_panels"  # in samples/: one PNG per sampling step
STRIP_FILE = "strip.png"    # in samples/
HEAT_POINTS = 64            # grid points per side of the plane
CELL_PX = 3                 # pixels per grid point: 192 px panels
MARGIN = 1.3                # the square's half-side: the outermost centre's coordinate x this
IMAGES_PER_PANEL = 16       # a 4 x 4 grid
PANEL_PX = HEAT_POINTS * CELL_PX
MAX_PANELS = 16             # a longer strip shows 16 steps, spread evenly, first and last kept
TITLE_PX = 16               # the band above a panel (its step) or a row (its configuration)
GAP = 4                     # white pixels between panels and between rows
POINT = (20, 20, 20)
CENTRE = (0, 90, 255)
# ColorBrewer's YlOrRd, its 7 lighter classes: the dots stay visible on the darkest.
HEAT_ANCHORS = np.array([(255, 255, 204), (255, 237, 160), (254, 217, 118), (254, 178, 76),
                         (253, 141, 60), (252, 78, 42), (227, 26, 28)], dtype=np.float64)
_STEP = re.compile(r"step_(\d+)\.png")


# --- computing: D on the plane, and the pictures -------------------------------------

def plane_limit(centres: Tensor) -> float:
    """Half the side of a 2-D panel's square: the outermost centre's coordinate x MARGIN."""
    return float(centres.abs().max()) * MARGIN


def plane_grid(limit: float, n: int = HEAT_POINTS) -> Tensor:
    """The (n * n, 2) centres of an n x n grid of cells covering [-limit, limit]^2, row
    by row from the top left, as the heat map is drawn: row i at y = limit - (i + 1/2)
    2 limit / n, column j at x = -limit + (j + 1/2) 2 limit / n."""
    ticks = -limit + (torch.arange(n, dtype=torch.float32) + 0.5) * (2 * limit / n)
    y, x = torch.meshgrid(ticks.flip(0), ticks, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)


@torch.no_grad()
def d_heatmap(module, points: Tensor, labels: Tensor | None = None, pack: int = 1) -> Tensor:
    """D's judgement of each of `points` (N, 2): sigmoid(D(x)) where the loss reads D's
    output as a logit (`module.probability_outputs`), D(x) otherwise; (N,) floats.

    D is in eval mode: batch norm uses its running statistics, which average the
    training batches of both kinds, and dropout is off. Training normalizes each
    batch, all real or all generated, by its own statistics; a grid of points is
    neither, and its own statistics would make the map depend on the grid. Where D
    has no batch norm (model.batch_norm_d=false, the default) this is exactly D.
    Instance noise and other changes of D's inputs (the `d_inputs` hooks) are left out:
    the map is D's function of a clean point. Where D judges `pack` samples at once,
    each point is a pack of `pack` identical copies. A conditional D (`labels`: the
    labels of the panel's samples) is averaged over the labels present, each weighted
    by its share of `labels`, in the space shown (probabilities, or raw scores).
    D judges the points in batches of its training batch (`module.batch_size` rows):
    its memory stays that of a step, and where D's output depends on its batch
    (minibatch discrimination, minibatch stddev) a point's companions are as many
    other grid points as a training batch holds."""
    chunk = max(1, module.batch_size // pack)
    return torch.cat([_d_scores(module, part, labels, pack) for part in points.split(chunk)])


def _d_scores(module, points: Tensor, labels: Tensor | None, pack: int) -> Tensor:
    score = torch.sigmoid if module.probability_outputs else (lambda t: t)
    with evaluating(module.D) as D:
        x = module.as_d_input(points.to(module.device)).to(next(D.parameters()).dtype)
        x = x.repeat_interleave(pack, dim=0)
        if labels is None:
            return score(D(x)).float()
        classes, counts = labels.unique(return_counts=True)
        total = torch.zeros(points.shape[0], device=module.device)
        for label, count in zip(classes.tolist(), (counts / labels.numel()).tolist(), strict=True):
            y = torch.full((points.shape[0],), label, dtype=torch.long, device=module.device)
            total += count * score(D(x, y)).float()
        return total


def heat_colours(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """uint8 RGB of `values` on the heat scale, `low` the palest and `high` the reddest;
    grey where a value is not finite (a diverging D)."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    t = np.clip((np.where(finite, values, low) - low) / max(high - low, 1e-12), 0, 1)
    stops = np.linspace(0, 1, len(HEAT_ANCHORS))
    rgb = np.stack([np.interp(t, stops, HEAT_ANCHORS[:, c]) for c in range(3)], axis=-1)
    rgb[~finite] = 128
    return np.round(rgb).astype(np.uint8)


def heat_range(heat: Tensor | None, probability: bool) -> tuple[float, float]:
    """The colour scale of a heat map: [0, 1] for probabilities, otherwise the range of
    its finite values."""
    finite = heat[heat.isfinite()] if heat is not None else None
    if probability or finite is None or not finite.numel():
        return 0.0, 1.0
    return float(finite.min()), float(finite.max())


def points_panel(fake: Tensor, centres: Tensor, limit: float, heat: Tensor | None = None,
                 scale: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """A (PANEL_PX, PANEL_PX, 3) picture of the plane [-limit, limit]^2: the heat map
    (HEAT_POINTS, HEAT_POINTS) if any (white without), CELL_PX pixels a grid point,
    coloured on `scale`; the samples `fake` (N, 2) as 2 x 2 px dots; the centres as crosses."""
    if heat is None:
        canvas = np.full((PANEL_PX, PANEL_PX, 3), 255, dtype=np.uint8)
    else:
        cells = heat_colours(heat.float().cpu().numpy(), *scale)
        canvas = np.ascontiguousarray(cells.repeat(CELL_PX, axis=0).repeat(CELL_PX, axis=1))

    def pixels(points: Tensor) -> tuple[np.ndarray, np.ndarray]:  # (column, row)
        p = ((points.float().cpu() + limit) * (PANEL_PX / (2 * limit))).floor().long().numpy()
        return p[:, 0], PANEL_PX - 1 - p[:, 1]

    x, y = pixels(fake)
    inside = (x >= 0) & (x < PANEL_PX - 1) & (y >= 0) & (y < PANEL_PX - 1)
    for dx in (0, 1):
        for dy in (0, 1):
            canvas[y[inside] + dy, x[inside] + dx] = POINT
    for cx, cy in zip(*pixels(centres), strict=True):  # 9 px crosses, 2 px thick
        for d in range(-4, 5):
            for px, py in ((cx + d, cy + d), (cx + d + 1, cy + d), (cx + d, cy - d),
                           (cx + d + 1, cy - d)):
                if 0 <= px < PANEL_PX and 0 <= py < PANEL_PX:
                    canvas[py, px] = CENTRE
    return canvas


def images_panel(images: Tensor) -> np.ndarray:
    """Up to IMAGES_PER_PANEL images (N, C, H, W) in [-1, 1], spread evenly over the
    batch, as a grid enlarged by the largest whole factor that keeps it within PANEL_PX."""
    pick = torch.linspace(0, images.shape[0] - 1, min(IMAGES_PER_PANEL, images.shape[0]))
    grid = image_grid(images[pick.round().long().unique()])
    factor = max(1, PANEL_PX // max(grid.shape[:2]))
    return np.ascontiguousarray(grid.repeat(factor, axis=0).repeat(factor, axis=1))


def titled(picture: np.ndarray, title: str, width: int | None = None,
           heading: bool = False) -> np.ndarray:
    """`picture` below a TITLE_PX band holding `title`, as wide as `width` (or as the
    picture, or the title) asks; the picture on white, at the left. A `heading` (a
    report row's name) is larger, on light grey, to stand apart from the panels' titles."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=13 if heading else 11)
    text_px = int(np.ceil(font.getlength(title))) + 4
    w = max(picture.shape[1], width or 0, text_px)
    canvas = Image.new("RGB", (w, TITLE_PX + picture.shape[0]), "white")
    if heading:
        canvas.paste((230, 230, 230), (0, 0, w, TITLE_PX))
    canvas.paste(Image.fromarray(picture), (0, TITLE_PX))
    ImageDraw.Draw(canvas).text((2, 0 if heading else 1), title, fill="black", font=font)
    return np.asarray(canvas)


def spread_evenly(items: list, k: int = MAX_PANELS) -> list:
    """k of `items` at evenly spaced places, the first and the last among them; all of
    them when there are at most k."""
    if len(items) <= k:
        return list(items)
    return [items[i] for i in np.linspace(0, len(items) - 1, k).round().astype(int)]


def side_by_side(panels: list[np.ndarray]) -> np.ndarray:
    """Panels in a row, GAP white pixels apart, top-aligned on white."""
    height = max(p.shape[0] for p in panels)
    width = sum(p.shape[1] for p in panels) + GAP * (len(panels) - 1)
    strip = np.full((height, width, 3), 255, dtype=np.uint8)
    x = 0
    for panel in panels:
        strip[:panel.shape[0], x:x + panel.shape[1]] = panel
        x += panel.shape[1] + GAP
    return strip


def stacked(rows: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """Strips one above another, each below a heading naming it, GAP white pixels apart,
    left-aligned on white."""
    width = max(titled(strip, name, heading=True).shape[1] for name, strip in rows)
    gap = np.full((GAP, width, 3), 255, dtype=np.uint8)
    parts = []
    for name, strip in rows:
        row = titled(strip, name, width, heading=True)
        parts += [gap, row] if parts else [row]
    return np.concatenate(parts, axis=0)


# --- I/O: the panels on disk -----------------------------------------------------------

def panel_path(samples_dir: Path, step: int) -> Path:
    return Path(samples_dir) / PANEL_DIR / f"step_{step:07d}.png"


def panel_steps(samples_dir: Path, up_to: int | None = None) -> list[int]:
    """The steps with a panel in `samples_dir`, in order, those after `up_to` left out
    (a run resumed from an earlier checkpoint, or rolled back, has not reached them)."""
    folder = Path(samples_dir) / PANEL_DIR
    found = (_STEP.fullmatch(p.name) for p in folder.iterdir()) if folder.is_dir() else ()
    steps = sorted(int(m[1]) for m in found if m)
    return [s for s in steps if up_to is None or s <= up_to]


def read_strip_panels(samples_dir: Path, up_to: int | None = None) -> list[np.ndarray]:
    """The panels a strip shows (spread_evenly over panel_steps), read back as RGB."""
    from PIL import Image

    return [np.asarray(Image.open(panel_path(samples_dir, step)).convert("RGB"))
            for step in spread_evenly(panel_steps(samples_dir, up_to))]


def copy_panels(source: Path, target: Path, up_to: int) -> None:
    """The panels of the samples folder `source` up to step `up_to` into `target`, where
    it has none of their steps: a resumed run (in a directory of its own) starts its
    strip with those of the run whose checkpoint it resumes."""
    import shutil

    if not Path(source).is_dir() or Path(source).resolve() == Path(target).resolve():
        return
    for step in panel_steps(source, up_to):
        copy = panel_path(target, step)
        if not copy.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(panel_path(source, step), copy)
