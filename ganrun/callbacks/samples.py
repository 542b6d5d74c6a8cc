"""A sample grid every `every` generator steps and at the end, from fixed noise (and
one row per class when conditional): samples/step_<N>.png and TensorBoard's Images."""

from __future__ import annotations

import torch

from ganrun.callbacks.base import EveryNSteps, run_dir, share_buffers
from ganrun.samples import generate, image_grid, point_scatter, sample_latent, save_png

POINTS = 2000  # generated points in a 2-D scatter


class SampleGrids(EveryNSteps):
    def __init__(self, every: int, n_samples: int):
        super().__init__(every)
        self.n_samples = n_samples
        self.noise = self.labels = self.preview = None

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
        save_png(picture, run_dir(trainer) / "samples" / f"step_{step:07d}.png")
        if trainer.logger is not None:
            trainer.logger.experiment.add_image("samples", picture, step, dataformats="HWC")
