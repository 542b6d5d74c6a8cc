"""GANModule: the training step, with manual optimization.

One `training_step` is one generator step: `n_critic` discriminator steps, each
on its own real batch, then `n_gen` G updates. The budget is counted in
generator steps (`g_steps`), not Lightning's `global_step`, which counts every
optimizer step. Logging, sample grids and checkpoints happen in one place,
`on_train_batch_end`.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ganrun.errors import DivergedError
from ganrun.losses import MinimaxLoss, RelativisticAverageLoss, build_loss
from ganrun.models import build_models
from ganrun.outputs import CHECKPOINT_FILE, METRICS_LOG, append_jsonl
from ganrun.regularizers import EMA, StepContext, build_regularizers
from ganrun.samples import image_grid, point_scatter, save_png

log = logging.getLogger("ganrun")


def build_optimizer(cfg: DictConfig, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` at learning rate `lr`."""
    common = {"lr": lr, "weight_decay": cfg.weight_decay}
    if cfg.name == "adam":
        return torch.optim.Adam(params, betas=tuple(cfg.betas), eps=cfg.eps, **common)
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                   **common)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=cfg.nesterov, **common)
    if cfg.name == "adagrad":
        return torch.optim.Adagrad(params, eps=cfg.eps, **common)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(params, rho=cfg.rho, eps=cfg.eps, **common)
    raise ValueError(f"unknown optimizer {cfg.name}")


def lr_factor(decay: str, step: int, total: int) -> float:
    """Learning-rate multiplier after `step` of `total` generator steps."""
    progress = min(step / total, 1.0)
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


def sample_latent(n: int, dim: int, kind: str, truncation: float | None = None,
                  device=None, generator: torch.Generator | None = None) -> Tensor:
    """z ~ N(0, I) or U[-1, 1]^dim; with `truncation` t, normal values are resampled
    until |z_i| <= t (the truncation trick) and uniform ones drawn from [-t, t]."""
    if kind == "uniform":
        bound = min(truncation, 1.0) if truncation else 1.0
        z = torch.rand(n, dim, device=device, generator=generator)
        return z.mul_(2 * bound).sub_(bound)
    z = torch.randn(n, dim, device=device, generator=generator)
    if truncation:
        outside = z.abs() > truncation
        while outside.any():
            z[outside] = torch.randn(int(outside.sum()), device=device, generator=generator)
            outside = z.abs() > truncation
    return z


class GANModule(pl.LightningModule):
    def __init__(self, cfg: DictConfig, data_shape: tuple[int, ...], run_dir: str | Path,
                 num_classes: int = 0, real_preview: Tensor | None = None, evaluator=None):
        super().__init__()
        self.evaluator = evaluator
        self.last_metrics: dict[str, float] = {}
        self._evaluated_at = -1
        self.data_shape = tuple(data_shape)
        self.automatic_optimization = False
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.points = len(data_shape) == 1
        self.num_classes = num_classes if cfg.model.conditional else 0
        self.G, self.D = build_models(cfg.model, data_shape, self.num_classes)
        self.loss = build_loss(cfg.loss)
        self.regularizers = build_regularizers(cfg.regularizer, total_steps=cfg.train.steps)
        for reg in self.regularizers:
            reg.wrap(self.G, self.D)
        ema = next((r for r in self.regularizers if isinstance(r, EMA)), None)
        self.G_ema = ema.model if ema else None  # a submodule: saved and moved with the rest
        self._hooks = {hook: [r for r in self.regularizers if hook in r.hooks()]
                       for hook in ("d_inputs", "d_fakes", "targets", "d_penalty", "g_penalty",
                                    "after_d_step", "after_g_step")}
        self.n_critic = cfg.optim.n_critic
        self.n_gen = cfg.optim.n_gen
        self.batch_size = cfg.dataset.batch_size
        self.latent_dim = cfg.model.latent_dim
        self.max_steps = cfg.train.steps
        # Plain copies of what every step reads: an OmegaConf lookup costs microseconds.
        self.every = {"log": cfg.log.every, "sample": cfg.log.sample_every,
                      "check": cfg.train.check_every, "ckpt": cfg.train.ckpt_every,
                      "metrics": cfg.metrics.every if evaluator is not None else 0}
        self.decays = cfg.optim.decay != "none"
        self.latent = cfg.sample.latent
        self.trains_d = self.loss.space != "samples"
        if not self.trains_d:
            self._hooks["d_penalty"] = []
        # D on the real batch in the G step costs a forward pass: only when it is used.
        self._g_needs_real = self.loss.g_uses_real or any(
            r.needs_real_features for r in self._hooks["g_penalty"])
        # sigmoid outputs live in [0, 1]: the real data is moved there to match.
        self.unit_range = cfg.model.out_activation == "sigmoid"
        self._register_fixed_inputs(cfg, real_preview)
        self.g_steps = 0
        self.images_seen = 0
        both = {r.name for r in self._hooks["d_penalty"]} & {r.name for r in self._hooks["g_penalty"]}
        self.stat_names = ["loss/d", "loss/g", "D/real", "D/fake"] + [
            f"loss/{r.name}" for r in self._hooks["d_penalty"]] + [
            f"loss/{r.name}_g" if r.name in both else f"loss/{r.name}"
            for r in self._hooks["g_penalty"]]
        self.last_stats: dict[str, float] = {}
        self.restores: list[dict] = []  # roll-backs after divergence (train.on_diverge)
        self.lr_scale = 1.0  # learning rates' factor after those roll-backs
        self.stop_signal: str | None = None  # set by SIGINT / SIGTERM: save and stop
        self._stat_sums: Tensor | None = None
        self._stat_count = 0
        self._clock: tuple[float, int] = (0.0, 0)
        # D(x) as a probability for the minimax family, the raw critic value otherwise.
        probability = isinstance(self.loss, MinimaxLoss | RelativisticAverageLoss)
        self._score = torch.sigmoid if probability else (lambda t: t)

    def _register_fixed_inputs(self, cfg: DictConfig, real_preview: Tensor | None) -> None:
        """Noise (and labels: one row per class) for sample grids, the same every time."""
        n = 2000 if self.points else cfg.log.n_samples
        labels = torch.zeros(0, dtype=torch.long)
        if self.num_classes:
            per_class = max(1, n // self.num_classes)
            labels = torch.arange(self.num_classes).repeat_interleave(per_class)
            n = labels.numel()
        noise = sample_latent(n, self.latent_dim, cfg.sample.latent, cfg.sample.truncation,
                              generator=torch.Generator().manual_seed(cfg.seed))
        self.register_buffer("fixed_noise", noise)
        self.register_buffer("fixed_labels", labels)
        preview = real_preview if real_preview is not None else torch.zeros(0)
        self.register_buffer("real_preview", preview, persistent=False)

    # --- optimizers ----------------------------------------------------------------

    def configure_optimizers(self):
        opt = self.cfg.optim
        optimizers = [build_optimizer(opt, self.G.parameters(), opt.lr_g),
                      build_optimizer(opt, self.D.parameters(), opt.lr_d)]
        if opt.decay == "none":
            return optimizers
        schedule = [torch.optim.lr_scheduler.LambdaLR(
            o, lambda step: lr_factor(opt.decay, step, self.max_steps)) for o in optimizers]
        return optimizers, schedule

    def sample_latent(self, n: int) -> Tensor:
        return sample_latent(n, self.latent_dim, self.latent, device=self.device)

    def sample_labels(self, n: int) -> Tensor | None:
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), device=self.device)

    @staticmethod
    def _requires_grad(net: nn.Module, flag: bool) -> None:
        for p in net.parameters():
            p.requires_grad_(flag)

    def discriminate(self, x: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """D's output (N,) and its last hidden features (N, F): D.forward, split open."""
        for reg in self._hooks["d_inputs"]:
            x = reg.d_inputs(x, self.g_steps)
        feat = self.D.features(x)
        out = self.D.head(feat).squeeze(1)
        if labels is not None:  # projection discriminator
            out = out + (self.D.embed(labels) * feat).sum(1)
        return out, feat

    def _loss_inputs(self, x: Tensor, out: Tensor, feat: Tensor) -> Tensor:
        space = self.loss.space
        return out if space == "outputs" else feat if space == "features" else x.flatten(1)

    # --- the step --------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> None:
        if self.g_steps >= self.max_steps:  # resumed at or past the budget
            self.trainer.should_stop = True
            return
        opt_g, opt_d = self._optimizers
        images, labels = batch if isinstance(batch, list | tuple) else (batch, None)
        if self.unit_range:
            images = images.add(1.0).mul_(0.5)
        reals = images.split(self.batch_size)
        real_labels = labels.split(self.batch_size) if labels is not None else [None] * len(reals)

        self._requires_grad(self.D, True)
        for i, (real, y_real) in enumerate(zip(reals, real_labels, strict=True)):
            z, y_fake = self.sample_latent(real.shape[0]), self.sample_labels(real.shape[0])
            if i < self.n_critic - 1:
                with torch.no_grad():
                    fake = self.G(z, y_fake)
            else:  # the last D step's fakes are reused, with their graph, by the G step
                fake = self.G(z, y_fake)
            if self.trains_d:
                d_loss, real_score, fake_score, d_penalties = self._d_step(
                    opt_d, real, y_real, fake.detach(), y_fake)

        self._requires_grad(self.D, False)
        for j in range(self.n_gen):
            if j > 0:
                z, y_fake = self.sample_latent(real.shape[0]), self.sample_labels(real.shape[0])
                fake = self.G(z, y_fake)
            g_loss, g_penalties = self._g_step(opt_g, real, y_real, fake, y_fake, z)

        if self.decays:
            for scheduler in self.lr_schedulers():
                scheduler.step()
        self.g_steps += 1
        self.images_seen += images.shape[0]
        if not self.trains_d:  # mmd on raw samples: there is no D to report on
            d_loss = real_score = fake_score = g_loss.new_zeros(())
            d_penalties = []
        stats = torch.stack([d_loss, g_loss, real_score, fake_score, *d_penalties,
                             *g_penalties]).detach()
        self._stat_sums = stats if self._stat_sums is None else self._stat_sums + stats
        self._stat_count += 1

    def _d_step(self, opt_d, real: Tensor, y_real, fake: Tensor, y_fake):
        for reg in self._hooks["d_fakes"]:
            fake = reg.d_fakes(fake)
        real_out, real_feat = self.discriminate(real, y_real)
        fake_out, fake_feat = self.discriminate(fake, y_fake)
        real_target, fake_target = self.loss.real_target, self.loss.fake_target
        for reg in self._hooks["targets"]:
            real_target, fake_target = reg.targets(real_target, fake_target, real_out, fake_out)
        d_loss = self.loss.d_loss(self._loss_inputs(real, real_out, real_feat),
                                  self._loss_inputs(fake, fake_out, fake_feat),
                                  real_target, fake_target)
        ctx = StepContext(real, fake, real_out, fake_out, self.D, real_feat, fake_feat, y_real)
        penalties = [reg.d_penalty(ctx) for reg in self._hooks["d_penalty"]]
        self._update(opt_d, d_loss + sum(penalties) if penalties else d_loss)
        for reg in self._hooks["after_d_step"]:
            reg.after_d_step(self.D)
        return d_loss, self._score(real_out).mean(), self._score(fake_out).mean(), penalties

    def _g_step(self, opt_g, real: Tensor, y_real, fake: Tensor, y_fake, z: Tensor):
        real_out = real_feat = None
        if self._g_needs_real:
            with torch.no_grad():
                real_out, real_feat = self.discriminate(real, y_real)
        fake_out, fake_feat = self.discriminate(fake, y_fake)
        g_loss = self.loss.g_loss(self._loss_inputs(fake, fake_out, fake_feat),
                                  self._loss_inputs(real, real_out, real_feat)
                                  if self._g_needs_real else None)
        ctx = StepContext(real, fake, real_out, fake_out, self.D, real_feat, fake_feat, y_real, z)
        penalties = [reg.g_penalty(ctx) for reg in self._hooks["g_penalty"]]
        self._update(opt_g, g_loss + sum(penalties) if penalties else g_loss)
        for reg in self._hooks["after_g_step"]:
            reg.after_g_step(self.G)
        return g_loss, penalties

    def _update(self, optimizer, loss: Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self._direct:
            loss.backward()
        else:
            self.manual_backward(loss)
        optimizer.step()

    def on_train_start(self) -> None:
        self._clock = (time.perf_counter(), self.images_seen)
        self._finite_at = self.g_steps
        self._direct = self._steps_directly()
        # Lightning's wrappers (precision plugin, strategy, hooks) around each backward
        # and optimizer step cost more than a small model's step; on one device without
        # a gradient scaler they do nothing for us, so the raw torch objects are used.
        wrapped = self.optimizers()
        self._optimizers = [o.optimizer for o in wrapped] if self._direct else wrapped
        if self.cfg.train.on_diverge == "restore" and self.g_steps == 0:
            self.save_checkpoint()  # something good to roll back to

    def _steps_directly(self) -> bool:
        from pytorch_lightning.plugins.precision import MixedPrecision, Precision
        from pytorch_lightning.strategies import SingleDeviceStrategy

        strategy = self.trainer.strategy
        plugin = strategy.precision_plugin
        no_scaler = type(plugin) is Precision or (
            type(plugin) is MixedPrecision and plugin.scaler is None)
        return isinstance(strategy, SingleDeviceStrategy) and no_scaler

    # --- logging, samples and checkpoints: every N generator steps -------------------

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        step, every = self.g_steps, self.every
        done = step >= self.max_steps
        stopping = done or self.stop_signal is not None
        saving = stopping or step % every["ckpt"] == 0
        logging_now = step % every["log"] == 0 or done
        sampling = step % every["sample"] == 0 or done
        evaluating = every["metrics"] and (step % every["metrics"] == 0 or done)
        # Nothing is logged, sampled, evaluated or saved from a diverged model.
        if (self._stat_count and (saving or logging_now or sampling or evaluating
                                  or step % every["check"] == 0)
                and not self._check_finite(step)):
            return  # rolled back to the last good checkpoint (train.on_diverge=restore)
        if self._stat_count and logging_now:
            self._log_stats(step)
        if sampling:
            self.write_samples(step)
        if evaluating:
            self.evaluate(step)
        if saving:
            self.save_checkpoint()
        if stopping:
            self.trainer.should_stop = True

    def _check_finite(self, step: int) -> bool:
        """Whether every loss and mean D output since the last check is finite (one
        host sync). If not: roll back while train.on_diverge=restore allows, else raise."""
        if bool(torch.isfinite(self._stat_sums).all()):
            self._finite_at = step
            return True
        stats = self._mean_stats()
        bad = ", ".join(f"{k}={v}" for k, v in stats.items() if not math.isfinite(v))
        message = f"diverged at generator step {step}: {bad} (finite at step {self._finite_at})"
        if self.cfg.train.on_diverge == "restore" and len(self.restores) < self.cfg.train.max_restores:
            self._restore_last_good(step, message)
            return False
        raise DivergedError(message, step, stats)

    def _restore_last_good(self, step: int, message: str) -> None:
        """Load checkpoints/last.ckpt (written before any NaN: checks precede saves) into
        the running model and optimizers, with the learning rates times the factor."""
        path = self.run_dir / "checkpoints" / CHECKPOINT_FILE
        state = torch.load(path, map_location=self.device, weights_only=False)
        saved = state["ganrun"]
        scale = self.lr_scale * self.cfg.train.restore_lr_factor
        self.load_state_dict(state["state_dict"])
        # Not the random streams: the same draws would lead to the same NaN.
        self.on_load_checkpoint({"ganrun": {k: v for k, v in saved.items() if k != "rng"}})
        change = scale / self.lr_scale  # the checkpoint's rates carry its own scale
        self.lr_scale = scale
        for optimizer, opt_state in zip(self._optimizers, state["optimizer_states"], strict=True):
            optimizer.load_state_dict(opt_state)
            for group in optimizer.param_groups:
                group["lr"] *= change
        if self.decays:
            for scheduler, sched_state in zip(self.lr_schedulers(), state["lr_schedulers"],
                                              strict=True):
                scheduler.load_state_dict(sched_state)
                scheduler.base_lrs = [lr * change for lr in scheduler.base_lrs]
        self._stat_sums, self._stat_count, self._finite_at = None, 0, self.g_steps
        self.restores.append({"at_step": step, "to_step": self.g_steps,
                              "lr_scale": self.lr_scale, "reason": message})
        log.warning("%s; restored generator step %d with learning rates x%g (%d of at most %d)",
                    message, self.g_steps, self.lr_scale, len(self.restores),
                    self.cfg.train.max_restores)

    def _mean_stats(self) -> dict[str, float]:
        """Losses and D outputs averaged since the last log (a host sync)."""
        means = (self._stat_sums / self._stat_count).tolist()
        return dict(zip(self.stat_names, means, strict=True))

    def _log_stats(self, step: int) -> None:
        stats = self._mean_stats()
        self._stat_sums, self._stat_count = None, 0
        self.last_stats = stats
        now, seen = time.perf_counter(), self.images_seen
        rate = (seen - self._clock[1]) / max(now - self._clock[0], 1e-9)
        self._clock = (now, seen)
        if self.logger is not None:
            self.logger.log_metrics({**stats, "perf/images_per_second": rate}, step=step)
        if self.trainer.is_global_zero:
            shown = "  ".join(f"{k} {v:.4f}" for k, v in stats.items())
            log.info("step %d/%d  %s  %.0f img/s", step, self.max_steps, shown, rate)

    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples and metrics: the EMA copy when there is one."""
        return self.G_ema if self.G_ema is not None else self.G

    @torch.no_grad()
    def generate(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """Samples in eval mode (batch norm uses its running statistics), in [-1, 1]
        for images whatever G's output activation."""
        G = self.sampler
        was_training = G.training
        G.eval()
        try:
            fake = G(z, labels)
        finally:
            G.train(was_training)
        return fake.mul(2.0).sub_(1.0) if self.unit_range else fake

    def generate_many(self, n: int, batch_size: int = 500) -> Tensor:
        """n samples for metrics: fresh noise (truncated if sample.truncation), uniform
        class labels when conditional."""
        fakes = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = sample_latent(m, self.latent_dim, self.cfg.sample.latent,
                              self.cfg.sample.truncation, device=self.device)
            fakes.append(self.generate(z, self.sample_labels(m)))
        return torch.cat(fakes)

    def evaluate(self, step: int) -> None:
        """Metrics of the current (EMA) generator: TensorBoard, metrics.jsonl, metrics.json."""
        if not self.trainer.is_global_zero or step == self._evaluated_at:
            return
        self._evaluated_at = step
        started = time.perf_counter()
        # Noise of its own, fixed by seed and step: metrics on or off, the training
        # run draws the same random numbers.
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.cfg.seed * 100_003 + step)
            results = self.evaluator.to(self.device).evaluate(
                self.generate_many(self.cfg.metrics.n_fake))
        self.last_metrics = results
        if self.logger is not None:
            self.logger.log_metrics({f"metrics/{k}": v for k, v in results.items()}, step=step)
        record = {"step": step, "images_seen": self.images_seen, **self.evaluator.protocol,
                  "seconds": round(time.perf_counter() - started, 3), "metrics": results}
        append_jsonl(self.run_dir / METRICS_LOG, record)
        shown = "  ".join(f"{k} {v:.4g}" for k, v in results.items())
        log.info("metrics at step %d (%s): %s", step, self.evaluator.extractor_id, shown)

    def write_samples(self, step: int) -> None:
        if not self.trainer.is_global_zero:
            return
        labels = self.fixed_labels if self.num_classes else None
        fake = self.generate(self.fixed_noise, labels)
        if self.points:
            picture = point_scatter(self.real_preview, fake)
        else:  # conditional: one row per class
            nrow = fake.shape[0] // self.num_classes if self.num_classes else None
            picture = image_grid(fake, nrow=nrow)
        save_png(picture, self.run_dir / "samples" / f"step_{step:07d}.png")
        if self.logger is not None:
            self.logger.experiment.add_image("samples", picture, step, dataformats="HWC")

    def save_checkpoint(self) -> None:
        """checkpoints/last.ckpt, written to a temporary file and renamed (atomic)."""
        path = self.run_dir / "checkpoints" / CHECKPOINT_FILE
        tmp = path.with_name(f".{CHECKPOINT_FILE}.tmp")
        self.trainer.save_checkpoint(tmp, weights_only=False)  # optimizer state too, to resume
        if self.trainer.is_global_zero:
            tmp.replace(path)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["ganrun"] = {
            "g_steps": self.g_steps,
            "images_seen": self.images_seen,
            "lr_scale": self.lr_scale,
            "regularizers": {r.name: r.state_dict() for r in self.regularizers},
            "data_shape": list(self.data_shape),
            "num_classes": self.num_classes,
            "config": OmegaConf.to_container(self.cfg),
            # The random streams (latents, penalties' interpolates, dropout), so that a
            # resumed run draws what the uninterrupted one would have.
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []},
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("ganrun", {})
        self.g_steps = int(state.get("g_steps", 0))
        self.images_seen = int(state.get("images_seen", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        saved = state.get("regularizers", {})
        for reg in self.regularizers:
            if saved.get(reg.name):
                reg.load_state_dict(saved[reg.name])
        rng = state.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"].cpu())
            if rng["cuda"] and torch.cuda.is_available():
                torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
