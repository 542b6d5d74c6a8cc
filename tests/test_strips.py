"""Samples over training, side by side (ganrun.strips): D's heat map against D called
here on the grid, the panels' pixels against matplotlib's own colour map, the strip's
panels read back from samples/strip.png and TensorBoard after real runs, and the
sweep's report_strips.png, a row per configuration."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_report import make_job

from ganrun.analysis.report import report
from ganrun.cli.tools import load_module
from ganrun.config.schema import validate
from ganrun.data import mixture_centres
from ganrun.samples import save_png
from ganrun.strips import (
    CELL_PX,
    GAP,
    HEAT_POINTS,
    PANEL_PX,
    POINT,
    TITLE_PX,
    d_heatmap,
    panel_path,
    plane_grid,
    plane_limit,
    points_panel,
    side_by_side,
    spread_evenly,
    titled,
)
from ganrun.training.module import GANModule

from conftest import compose_cfg
from tbread import image_steps


def module_for(*overrides: str) -> GANModule:
    cfg = validate(compose_cfg("dataset=ring8", *overrides)[0])
    torch.manual_seed(0)
    return GANModule(cfg, (2,))


def reference_colours(values: np.ndarray, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """matplotlib's YlOrRd over its 7 lighter classes of 9 (0 to 6/8 of the map)."""
    import matplotlib

    t = np.clip((values - low) / (high - low), 0, 1) * 0.75
    return np.round(matplotlib.colormaps["YlOrRd"](t)[..., :3] * 255)


def cell_centres_match(panel: np.ndarray, heat: np.ndarray, low=0.0, high=1.0) -> float:
    """The share of grid cells whose centre pixel is `heat`'s colour (within matplotlib's
    256-level quantisation), among those no dot or cross covers."""
    centre = panel[CELL_PX // 2::CELL_PX, CELL_PX // 2::CELL_PX].astype(float)
    covered = (centre.max(-1) < 60) | ((centre[..., 2] > 200) & (centre[..., 0] < 60))
    close = np.abs(centre - reference_colours(heat, low, high)).max(-1) <= 3
    assert covered.mean() < 0.5
    return float(close[~covered].mean())


# --- the heat map is D on the grid -------------------------------------------------------

def test_the_grid_covers_the_square_row_by_row_from_the_top_left():
    grid = plane_grid(2.6, 4).numpy()
    ticks = np.array([-1.95, -0.65, 0.65, 1.95])
    assert np.allclose(grid[:, 0], np.tile(ticks, 4)) and np.allclose(grid[:, 1], np.repeat(ticks[::-1], 4))
    assert plane_limit(mixture_centres(compose_cfg("dataset=grid25")[0].dataset)) == pytest.approx(5.2)


def test_the_heat_map_is_d_in_eval_mode_as_a_probability_or_a_raw_score():
    module = module_for("model.batch_norm_d=true", "loss=nsgan")
    grid = plane_grid(2.6)
    module.D.train()
    heat = d_heatmap(module, grid)
    assert module.D.training  # given back in the mode it was in
    with torch.no_grad():  # eval first: a forward in train mode moves the running statistics
        expected = torch.sigmoid(module.D.eval()(grid))
        batch_statistics = torch.sigmoid(module.D.train()(grid))
    assert heat.shape == (HEAT_POINTS ** 2,) and torch.allclose(heat, expected, atol=1e-6)
    assert not torch.allclose(heat, batch_statistics, atol=1e-3)  # the running statistics

    critic = module_for("loss=wgan")
    with torch.no_grad():
        raw = critic.D(grid)
    assert torch.allclose(d_heatmap(critic, grid), raw, atol=1e-6) and (raw < 0).any()


def test_a_point_is_a_pack_of_copies_and_a_conditional_d_is_averaged_over_the_labels():
    packed = module_for("regularizer=[pacgan]", "regularizer.pacgan.pack=3")
    grid = plane_grid(2.6, 8)
    D = packed.D
    with torch.no_grad():  # D's own packing off, the pack built here: (x, y, x, y, x, y)
        D.pack = 1
        expected = torch.sigmoid(D(torch.cat([grid, grid, grid], dim=1)))
        D.pack = 3
    assert torch.allclose(d_heatmap(packed, grid, pack=3), expected, atol=1e-6)

    conditional = module_for("regularizer=[dyngan]")
    labels = torch.tensor([4, 4, 4, 1])  # 3/4 of the samples in class 4, 1/4 in class 1
    with torch.no_grad():
        def p(label):
            return torch.sigmoid(conditional.D(grid, torch.full((grid.shape[0],), label)))
        expected = 0.75 * p(4) + 0.25 * p(1)
    assert torch.allclose(d_heatmap(conditional, grid, labels), expected, atol=1e-6)


def test_a_batch_dependent_d_judges_the_grid_in_training_batches():
    """Minibatch discrimination: D's output depends on its batch, so the grid goes through
    D as many points at a time as a training batch (and its memory stays a step's: the
    whole 64x64 grid at once asked for 34 GB)."""
    module = module_for("regularizer=[minibatch_discrimination]", "dataset.batch_size=50")
    grid = plane_grid(2.6, 16)  # 256 points: 5 batches of 50 and one of 6
    with torch.no_grad():
        expected = torch.cat([torch.sigmoid(module.D.eval()(part)) for part in grid.split(50)])
        whole = torch.sigmoid(module.D.eval()(grid))
    heat = d_heatmap(module, grid)
    assert torch.allclose(heat, expected, atol=1e-6)
    assert not torch.allclose(heat, whole, atol=1e-4)  # the batch matters: it is not the grid's
    assert d_heatmap(module, plane_grid(2.6)).shape == (HEAT_POINTS ** 2,)


def test_the_panel_shows_the_heat_map_the_dots_and_the_centres():
    heat = torch.rand(HEAT_POINTS, HEAT_POINTS, generator=torch.Generator().manual_seed(0))
    centres = torch.tensor([[2.0, 0.0]])
    panel = points_panel(torch.tensor([[0.01, 0.01]]), centres, 2.6, heat)
    assert panel.shape == (PANEL_PX, PANEL_PX, 3)
    assert cell_centres_match(panel, heat.numpy()) == 1.0
    # (0.01, 0.01) falls in pixel column 96 (2.61 / 5.2 x 192 = 96.4), row 191 - 96; a
    # 2 x 2 dot from there.
    assert (panel[95:97, 96:98] == POINT).all()
    cx, cy = int((2.0 + 2.6) * PANEL_PX / 5.2), PANEL_PX - 1 - int(2.6 * PANEL_PX / 5.2)
    assert (panel[cy, cx] == (0, 90, 255)).all()
    # A critic's panel: its own range, the lowest value palest, the highest reddest.
    scores = heat * 10 - 3
    assert cell_centres_match(points_panel(torch.zeros(0, 2), centres, 2.6, scores, (-3.0, 7.0)),
                              scores.numpy(), -3.0, 7.0) == 1.0
    heat[0, 0] = float("nan")  # a diverging D: that cell grey
    assert (points_panel(torch.zeros(0, 2), centres, 2.6, heat)[:CELL_PX, :CELL_PX] == 128).all()


def test_strips_put_panels_side_by_side_and_long_ones_show_sixteen_steps_spread_evenly():
    panels = [titled(np.zeros((PANEL_PX, PANEL_PX, 3), np.uint8), f"step {s}") for s in (1, 2, 3)]
    strip = side_by_side(panels)
    assert strip.shape == (TITLE_PX + PANEL_PX, 3 * PANEL_PX + 2 * GAP, 3)
    assert (strip[:, PANEL_PX:PANEL_PX + GAP] == 255).all()
    assert spread_evenly(list(range(5))) == [0, 1, 2, 3, 4]
    assert spread_evenly(list(range(0, 400, 10))) == [
        round(i * 39 / 15) * 10 for i in range(16)]


# --- real runs ---------------------------------------------------------------------------

def tensorboard_images(tb_dir, tag: str) -> dict[int, np.ndarray]:
    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0})
    acc.Reload()
    return {e.step: np.asarray(Image.open(io.BytesIO(e.encoded_image_string)).convert("RGB"))
            for e in acc.Images(tag)}


def panels_of(strip: np.ndarray, width: int) -> list[np.ndarray]:
    """A strip cut back into its panels of `width` pixels, checking the white gaps."""
    n = (strip.shape[1] + GAP) / (width + GAP)
    assert n == int(n), (strip.shape, width)
    for k in range(1, int(n)):
        assert (strip[:, k * (width + GAP) - GAP:k * (width + GAP)] == 255).all()
    return [strip[:, k * (width + GAP):k * (width + GAP) + width] for k in range(int(n))]


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_a_run_on_the_ring_writes_its_strip_over_d_and_tensorboard_gets_it(train_fast):
    _, run_dir = train_fast("dataset=ring8", "dataset.batch_size=64", "train.steps=20",
                            "log.sample_every=10", "train.ckpt_every=20")
    samples = run_dir / "samples"
    strip = read_png(samples / "strip.png")
    assert strip.shape == (TITLE_PX + PANEL_PX, 2 * PANEL_PX + GAP, 3)  # a panel per step
    panels = panels_of(strip, PANEL_PX)
    for step, panel in zip((10, 20), panels, strict=True):
        assert np.array_equal(panel, read_png(panel_path(samples, step)))
    # TensorBoard's "strip": at step 10 one panel, at 20 both: the panels accumulate.
    logged = tensorboard_images(run_dir / "tb", "strip")
    assert sorted(logged) == [10, 20] == image_steps(run_dir / "tb", "strip")
    assert np.array_equal(logged[20], strip) and np.array_equal(logged[10], panels[0])
    # The last panel's heat map is D of the checkpoint (saved after the panel) on the grid.
    module, cfg = load_module(run_dir / "checkpoints" / "last.ckpt")
    limit = plane_limit(mixture_centres(cfg.dataset))
    heat = d_heatmap(module, plane_grid(limit)).view(HEAT_POINTS, HEAT_POINTS).numpy()
    assert heat.std() > 0
    assert cell_centres_match(panels[1][TITLE_PX:], heat) > 0.99
    # The colours pin D's probability to about 0.01: a map 0.05 off, or upside down, fails.
    assert cell_centres_match(panels[1][TITLE_PX:], heat + 0.05) < 0.5
    assert cell_centres_match(panels[1][TITLE_PX:], heat[::-1]) < 0.9


def test_a_run_on_images_writes_a_strip_of_small_grids(train_fast):
    _, run_dir = train_fast("train.steps=4", "log.sample_every=2")
    strip = read_png(run_dir / "samples" / "strip.png")
    # 16 digits of 16 px in a 4 x 4 grid with 2 px gaps (74 px), enlarged 192 // 74 = 2 times.
    assert strip.shape == (TITLE_PX + 148, 2 * 148 + GAP, 3)
    # Its digits are the step's grid's (64 in 8 rows of 8) numbers 0, 4, 8, 13, ..., 63.
    grid = read_png(run_dir / "samples" / "step_0000004.png")
    panel = panels_of(strip, 148)[1][TITLE_PX:]
    for j, k in enumerate(np.linspace(0, 63, 16).round().astype(int)):
        digit = grid[2 + k // 8 * 18:][:16, 2 + k % 8 * 18:][:, :16]
        shown = panel[2 * (2 + j // 4 * 18):][:32:2, 2 * (2 + j % 4 * 18):][:, :32:2]
        assert np.array_equal(shown, digit), (j, k)
    assert sorted(tensorboard_images(run_dir / "tb", "strip")) == [2, 4]
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == [
        "step_0000002.png", "step_0000004.png", "strip.png", "strip_panels"]


def test_a_resumed_run_goes_on_with_the_strip_of_the_run_it_resumes(train_fast):
    options = ("dataset=ring8", "dataset.batch_size=64", "log.sample_every=5")
    _, first = train_fast(*options, "train.steps=10", "train.ckpt_every=10", name="first")
    _, then = train_fast(*options, "train.steps=20", f"ckpt_path={first}", name="then")
    panels = panels_of(read_png(then / "samples" / "strip.png"), PANEL_PX)
    assert len(panels) == 4  # steps 5 and 10 from the first run, 15 and 20 its own
    for panel, step in zip(panels[:2], (5, 10), strict=True):
        assert np.array_equal(panel, read_png(panel_path(first / "samples", step)))


# --- the sweep's figure ------------------------------------------------------------------

def fake_panels(job, steps, shade: int) -> None:
    for step in steps:
        picture = np.full((PANEL_PX, PANEL_PX, 3), shade, dtype=np.uint8)
        save_png(titled(picture, f"step {step}"), panel_path(job / "samples", step))


def test_report_strips_stack_each_configurations_lowest_seed(tmp_path):
    sweep = tmp_path / "sweep"
    shades = {}
    for num, (loss, seed, fid) in enumerate([("loss=bce", 1, 30.0), ("loss=bce", 0, 32.0),
                                             ("loss=hinge", 0, 20.0), ("loss=lsgan", 0, 40.0)]):
        make_job(sweep, num, [loss, f"seed={seed}"], fid=fid)
        job = next(p for p in sweep.iterdir() if p.name.startswith(f"{num}_"))
        if loss != "loss=lsgan":  # its job has no strip: left out, with a note
            shades[(loss, seed)] = 40 * num + 10
            fake_panels(job, (10, 20, 30) if loss == "loss=bce" else (10, 20), shades[(loss, seed)])
    _, _, written = report(sweep, "fid")
    figure = read_png(sweep / "report_strips.png")
    assert sweep / "report_strips.png" in written
    row = TITLE_PX + TITLE_PX + PANEL_PX  # a row's name, its panels' titles, the panels
    assert figure.shape[0] == 2 * row + GAP  # hinge ranked first, then bce's seed 0
    assert figure.shape[1] >= 3 * PANEL_PX + 2 * GAP
    hinge = figure[2 * TITLE_PX:row]
    bce = figure[row + GAP + 2 * TITLE_PX:2 * row + GAP]
    assert (hinge[:, :PANEL_PX] == shades[("loss=hinge", 0)]).all()
    assert (hinge[:, 2 * PANEL_PX + 2 * GAP:] == 255).all()  # two panels, white beyond
    for panel in panels_of(bce[:, :3 * PANEL_PX + 2 * GAP], PANEL_PX):
        assert (panel == shades[("loss=bce", 0)]).all()  # seed 0, not seed 1
    md = (sweep / "report.md").read_text()
    assert "`report_strips.png`" in md
    assert "- `loss=lsgan`: no strip (`3_loss=lsgan` has no samples/strip_panels/" in md
