"""A sample grid every `every` generator steps and at the end, from fixed noise (and
one row per class when conditional): samples/step_<N>.png and TensorBoard's Images
("samples"). With it, samples over training side by side (ganrun.strips): a panel per
sampling step in samples/strip_panels/ (on 2-D data the samples over D's heat map,
the mode centres marked; on images a small grid of the same samples), and the strip
of every panel up to the step, samples/strip.png and TensorBoard's "strip". A resumed
run's strip begins with the panels of the run it resumes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganrun import loggers
from ganrun.callbacks.base import EveryNSteps, run_dir, share_buffers
from ganrun.outputs import checkpoint_of
from ganrun.ranges import at_least
from ganrun.regularizers import samples_per_decision
from ganrun.samples import generate, image_grid, point_scatter, sample_latent, save_png
from ganrun.strips import (
    HEAT_POINTS,
    STRIP_FILE,
    copy_panels,
    d_heatmap,
    heat_range,
    images_panel,
    panel_path,
    plane_grid,
    plane_limit,
    points_panel,
    read_strip_panels,
    side_by_side,
    titled,
)

POINTS = 2000  # generated points in a 2-D scatter


@dataclass
class SampleRanges:
    every: int = at_least(1)
    n_samples: int = at_least(1)


class SampleGrids(EveryNSteps):
    ranges = SampleRanges

    def __init__(self, every: int, n_samples: int):
        super().__init__(every)
        self.check(n_samples=n_samples)
        self.n_samples = n_samples
        self.noise = self.labels = self.preview = self.centres = None
        self.pack = 1

    def setup(self, trainer, pl_module, stage: str) -> None:
        """The same noise at every grid, drawn from the run's seed alone."""
        cfg, classes = pl_module.cfg, pl_module.num_classes
        n = POINTS if pl_module.points else self.n_samples
        if classes and pl_module.labeller is None:  # one row per class
            self.labels = torch.arange(classes).repeat_interleave(max(1, n // classes))
            n = self.labels.numel()
        self.noise = sample_latent(n, pl_module.latent_dim, cfg.sample.latent,
                                   cfg.sample.truncation,
                                   generator=torch.Generator().manual_seed(cfg.seed))
        datamodule = trainer.datamodule
        self.preview = getattr(datamodule, "preview", None) if datamodule is not None else None
        if pl_module.points:
            from ganrun.data import mixture_centres

            self.centres = mixture_centres(cfg.dataset)
        self.pack = samples_per_decision(cfg.regularizer)

    def on_train_start(self, trainer, pl_module) -> None:
        """A resumed run goes on with the strip of the run it resumes: the panels in the
        checkpoint's run directory up to the restored step are copied into this one's."""
        ckpt_path = pl_module.cfg.get("ckpt_path")
        if ckpt_path and trainer.is_global_zero:
            earlier = checkpoint_of(str(ckpt_path)).parent.parent / "samples"
            copy_panels(earlier, run_dir(trainer) / "samples", pl_module.g_steps)

    def act(self, trainer, module, step: int) -> None:
        share_buffers(trainer, module)
        if not trainer.is_global_zero:
            return
        labels = self.labels.to(module.device) if self.labels is not None else None
        if module.labeller is not None:  # its labels as it draws them now, from the seed
            labels = module.labeller.sample_labels(
                self.noise.shape[0], generator=torch.Generator().manual_seed(module.cfg.seed))
            labels = labels.to(module.device)
        fake = generate(module, self.noise.to(module.device), labels)
        if module.points:
            preview = self.preview if self.preview is not None else torch.zeros(0, 2)
            picture = point_scatter(preview, fake)
        else:  # conditional: one row per class
            nrow = fake.shape[0] // module.num_classes if self.labels is not None else None
            picture = image_grid(fake, nrow=nrow)
        samples = run_dir(trainer) / "samples"
        grid = samples / f"step_{step:07d}.png"
        save_png(picture, grid)
        save_png(self.panel(module, fake, labels, step), panel_path(samples, step))
        strip = side_by_side(read_strip_panels(samples, up_to=step))
        save_png(strip, samples / STRIP_FILE)
        loggers.picture(trainer, "samples", picture, step, grid)
        loggers.picture(trainer, "strip", strip, step, samples / STRIP_FILE)

    def panel(self, module, fake, labels, step: int) -> np.ndarray:
        """This step's panel of the strip (ganrun.strips): D's heat map under the samples
        on 2-D data where the loss trains D's output, titled with the step (and with
        the scale of raw scores, each panel's own)."""
        if not module.points:
            return titled(images_panel(fake), f"step {step}")
        limit, heat, note = plane_limit(self.centres), None, ""
        if module.loss.space == "outputs":  # else D's output is never trained: no map
            grid = plane_grid(limit)
            heat = d_heatmap(module, grid, labels, self.pack).view(HEAT_POINTS, HEAT_POINTS)
        scale = heat_range(heat, module.probability_outputs)
        if heat is not None and not module.probability_outputs:
            note = f": D {scale[0]:.3g} to {scale[1]:.3g}"
        return titled(points_panel(fake, self.centres, limit, heat, scale), f"step {step}{note}")
