"""GANModule: the training step, with manual optimization.

One `training_step` is one generator step: `n_critic` discriminator steps, each
on its own real batch, then `n_gen` G updates. The budget is counted in
generator steps (`g_steps`), not Lightning's `global_step`, which counts every
optimizer step. What happens around the step (logging, sample grids, metrics,
checkpoints, the divergence guard) is one Lightning callback each, in
ganrun/callbacks/; they read what the step leaves here: `g_steps`, the step
statistics reported by name (`self.statistics`, ganrun.stepstats), and whether the
run is `finished` or `stopping`.

The module names no technique: it calls the regularizers' hooks that are
overridden and asks all of them for their traits (ganrun.regularizers.base): the
samples D judges at once, the source of labels, the network that samples.
"""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from ganrun.batch import mean as mean_per_run
from ganrun.losses import MinimaxLoss, RelativisticAverageLoss, build_loss
from ganrun.models import build_models
from ganrun.optim import OPTIMIZERS, build_optimizer, lr_factor
from ganrun.regularizers import HOOKS, StepContext, build_regularizers, samples_per_decision
from ganrun.samples import sample_latent
from ganrun.stepstats import StepStatistics

log = logging.getLogger("ganrun")

RANK_SEED_STRIDE = 1_000_003  # process r draws its noise from seed + r * this (r = 0: seed)


class GANModule(pl.LightningModule):
    def __init__(self, cfg: DictConfig, data_shape: tuple[int, ...], num_classes: int = 0):
        super().__init__()
        self.automatic_optimization = False
        self.cfg = cfg
        self.data_shape = tuple(data_shape)
        self.points = len(data_shape) == 1
        self.regularizers = build_regularizers(cfg.regularizer, total_steps=cfg.train.steps)
        # A regularizer with classes of its own (conditions) is the source of labels: G
        # and D are conditioned on its classes in place of the dataset's.
        self.labeller = next((r for r in self.regularizers if r.conditions), None)
        self.num_classes = (self.labeller.conditions if self.labeller
                            else num_classes if cfg.model.conditional else 0)
        pack = samples_per_decision(cfg.regularizer)
        self.G, self.D = build_models(cfg.model, data_shape, self.num_classes, pack=pack)
        self.loss = build_loss(cfg.loss)
        for reg in self.regularizers:
            reg.wrap(self.G, self.D)
        # The network samples and metrics come from, when a regularizer has one (a
        # submodule: saved and moved with the rest).
        self.G_sampler = next((net for net in (r.sampler() for r in self.regularizers)
                               if net is not None), None)
        self.trains_d = self.loss.space != "samples"
        self._hooks = {hook: [r for r in self.regularizers if hook in r.hooks()]
                       for hook in HOOKS}
        if not self.trains_d:
            self._hooks["d_penalty"] = []
        # Plain copies of what every step reads: an OmegaConf lookup costs microseconds.
        self.n_critic, self.n_gen = cfg.optim.n_critic, cfg.optim.n_gen
        # Samples per D step: dataset.batch_size decisions of D, `pack` samples each.
        self.batch_size, self.latent_dim = cfg.dataset.batch_size * pack, cfg.model.latent_dim
        self.max_steps, self.latent = cfg.train.steps, cfg.sample.latent
        self.decays = cfg.optim.decay != "none"
        # D on the real batch in the G step costs a forward pass: only when it is used.
        self._g_needs_real = self.loss.g_uses_real or any(
            r.needs_real_features for r in self._hooks["g_penalty"])
        # sigmoid outputs live in [0, 1]: the real data is moved there to match.
        self.unit_range = cfg.model.out_activation == "sigmoid"
        self.g_steps = 0
        self.images_seen = 0
        self.trained_step: int | None = None  # the step just trained; None: nothing new
        self.finished = self.stopping = False
        self.stop_signal: str | None = None  # set by SIGINT / SIGTERM: save and stop
        self.checkpoint_asked = False  # by this process's clock (callbacks.checkpoint)
        self.checkpoint_now = False  # by any process's: save after this step
        self.lr_scale = 1.0  # learning rates' factor after roll-backs (train.on_diverge)
        both = {r.name for r in self._hooks["d_penalty"]} & {r.name for r in self._hooks["g_penalty"]}
        self._d_penalty_names = [f"loss/{r.name}" for r in self._hooks["d_penalty"]]
        self._g_penalty_names = [f"loss/{r.name}_g" if r.name in both else f"loss/{r.name}"
                                 for r in self._hooks["g_penalty"]]
        self.statistics = StepStatistics()  # by name, summed on the device between logs
        self.probe = None  # set by callbacks.health for a step whose statistics are logged
        # D(x) as a probability for the minimax family, the raw critic value otherwise.
        self.probability_outputs = isinstance(self.loss, MinimaxLoss | RelativisticAverageLoss)
        self._score = torch.sigmoid if self.probability_outputs else (lambda t: t)
        self._world = 1

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
        """Classes of generated samples: the labeller's, or uniform."""
        if self.labeller is not None:
            return self.labeller.sample_labels(n).to(self.device)
        if not self.num_classes:
            return None
        return torch.randint(self.num_classes, (n,), device=self.device)

    def as_d_input(self, x: Tensor) -> Tensor:
        """Stored data (uint8, or floats in [-1, 1]) or samples in [-1, 1] as D sees them
        in training: floats, moved to [0, 1] for a sigmoid generator."""
        if x.dtype == torch.uint8:
            x = x.float().div_(127.5).sub_(1.0)
        return x.add(1.0).mul_(0.5) if self.unit_range else x

    def real_data(self) -> Tensor:
        """The whole training set, as stored (uint8 images are scaled batch by batch)."""
        return self.trainer.datamodule.dataset.data

    def discriminate(self, x: Tensor, labels: Tensor | None,
                     params: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """D's output (N,) and its last hidden features (N, F); with `params`, those of
        D with these parameters (D some updates ahead) instead of its own."""
        for reg in self._hooks["d_inputs"]:
            x = reg.d_inputs(x, self.g_steps)
        if params is None:
            return self.D(x, labels, with_features=True)
        return torch.func.functional_call(self.D, params, (x, labels), {"with_features": True})

    def _loss_inputs(self, x: Tensor, out: Tensor, feat: Tensor) -> Tensor:
        space = self.loss.space
        return out if space == "outputs" else feat if space == "features" else x.flatten(1)

    # --- the step --------------------------------------------------------------------

    def training_step(self, batch, batch_idx: int) -> None:
        self.trained_step = None
        if self.g_steps >= self.max_steps:  # resumed at or past the budget
            self.trainer.should_stop = True
            return
        opt_g, opt_d = self.optimizers_in_use
        images, labels = batch if isinstance(batch, list | tuple) else (batch, None)
        if self.labeller is not None:  # the batch carries sample numbers
            labels = self.labeller.real_labels(labels)
        if self.unit_range:
            images = images.add(1.0).mul_(0.5)
        reals = images.split(self.batch_size)
        real_labels = labels.split(self.batch_size) if labels is not None else [None] * len(reals)

        self.D.requires_grad_(True)
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

        self.D.requires_grad_(False)
        for j in range(self.n_gen):
            if j > 0:
                z, y_fake = self.sample_latent(real.shape[0]), self.sample_labels(real.shape[0])
                fake = self.G(z, y_fake)
            g_loss, g_penalties = self._g_step(opt_g, real, y_real, fake, y_fake, z)

        if self.decays:
            for scheduler in self.lr_schedulers():
                scheduler.step()
        self.g_steps += 1
        self.images_seen += images.shape[0] * self._world  # by every process
        if not self.trains_d:  # mmd on raw samples: there is no D to report on
            d_loss = real_score = fake_score = torch.zeros_like(g_loss)
            d_penalties = []
        report = self.statistics.report
        report("loss/d", d_loss)
        report("loss/g", g_loss)
        report("D/real", real_score)
        report("D/fake", fake_score)
        for name, value in zip(self._d_penalty_names, d_penalties, strict=True):
            report(name, value)
        for name, value in zip(self._g_penalty_names, g_penalties, strict=True):
            report(name, value)
        self.statistics.end_step()
        for reg in self._hooks["after_step"]:
            reg.after_step(self)
        if self.probe is not None and self.probe.outputs is not None:
            for name, value in self.probe.tensors(self).items():
                self.statistics.note(name, value)  # this step's, not averaged
        self.trained_step = self.g_steps
        self.finished = self.g_steps >= self.max_steps
        stop, self.checkpoint_now = self._shared_requests()
        self.stopping = self.finished or stop

    def _d_objective(self, real: Tensor, y_real, fake: Tensor, y_fake, params=None):
        """D's loss on a real and a generated batch (of D with `params` if given), and
        what it made of them: (loss, real_out, real_feat, fake_out, fake_feat)."""
        real_out, real_feat = self.discriminate(real, y_real, params)
        fake_out, fake_feat = self.discriminate(fake, y_fake, params)
        real_target, fake_target = self.loss.real_target, self.loss.fake_target
        for reg in self._hooks["targets"]:
            real_target, fake_target = reg.targets(real_target, fake_target, real_out, fake_out)
        d_loss = self.loss.d_loss(self._loss_inputs(real, real_out, real_feat),
                                  self._loss_inputs(fake, fake_out, fake_feat),
                                  real_target, fake_target)
        return d_loss, real_out, real_feat, fake_out, fake_feat

    def _d_step(self, opt_d, real: Tensor, y_real, fake: Tensor, y_fake):
        for reg in self._hooks["d_fakes"]:
            fake = reg.d_fakes(fake)
        d_loss, real_out, real_feat, fake_out, fake_feat = self._d_objective(
            real, y_real, fake, y_fake)
        ctx = StepContext(real, fake, real_out, fake_out, self.D, real_feat, fake_feat, y_real)
        penalties = [reg.d_penalty(ctx) for reg in self._hooks["d_penalty"]]
        if self.probe is not None:
            self.probe.record_outputs(real_out, fake_out)
        self._update(opt_d, d_loss + sum(penalties) if penalties else d_loss, "D")
        for reg in self._hooks["after_d_step"]:
            reg.after_d_step(self.D)
        return (d_loss, mean_per_run(self._score(real_out)), mean_per_run(self._score(fake_out)),
                penalties)

    def _g_step(self, opt_g, real: Tensor, y_real, fake: Tensor, y_fake, z: Tensor):
        real_out = real_feat = params = None
        for reg in self._hooks["unroll"]:  # G's loss against D some updates ahead
            params = reg.unroll(
                self.D, lambda p: self._d_objective(real, y_real, fake, y_fake, p)[0],
                getattr(self.optimizers_in_use[1], "optimizer", self.optimizers_in_use[1]),
                OPTIMIZERS[self.cfg.optim.name])
        if self._g_needs_real:
            with torch.no_grad():
                real_out, real_feat = self.discriminate(real, y_real, params)
        fake_out, fake_feat = self.discriminate(fake, y_fake, params)
        g_loss = self.loss.g_loss(self._loss_inputs(fake, fake_out, fake_feat),
                                  self._loss_inputs(real, real_out, real_feat)
                                  if self._g_needs_real else None)
        ctx = StepContext(real, fake, real_out, fake_out, self.D, real_feat, fake_feat, y_real, z)
        penalties = [reg.g_penalty(ctx) for reg in self._hooks["g_penalty"]]
        self._update(opt_g, g_loss + sum(penalties) if penalties else g_loss, "G")
        for reg in self._hooks["after_g_step"]:
            reg.after_g_step(self.G)
        return g_loss, penalties

    def _update(self, optimizer, loss: Tensor, net: str) -> None:
        optimizer.zero_grad(set_to_none=True)
        if self._direct:
            loss.backward()
        else:
            self.manual_backward(loss)
        if self.probe is not None:
            self.probe.record_grads(net, self.G if net == "G" else self.D)
        optimizer.step()

    def _shared_requests(self) -> tuple[bool, bool]:
        """Whether a signal reached this process (or, under DDP, any process), and
        whether a process's clock asks for a checkpoint (train.ckpt_minutes): every
        process must stop or save after the same step, so the decisions are shared, in
        one all-reduce."""
        asked = (self.stop_signal is not None, self.checkpoint_asked)
        if self._world == 1:
            return asked
        votes = torch.tensor([int(a) for a in asked], device=self.device)
        stop, save = self.trainer.strategy.reduce(votes, reduce_op="sum").tolist()
        return stop > 0, save > 0

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.stopping:  # after every callback has seen the step
            self.trainer.should_stop = True

    # --- set-up: processes, noise streams, the raw optimizers --------------------------

    def setup(self, stage: str) -> None:
        """Under DDP each process draws its own noise: process r from seed + r * 1000003,
        so process 0 draws what a single-process run would (a restored checkpoint then
        sets every process's own stream back)."""
        self._world = self.trainer.world_size
        if self._world > 1 and self.global_rank > 0:
            torch.manual_seed(self.cfg.seed + RANK_SEED_STRIDE * self.global_rank)
        elif self._world > 1:
            log.info("DDP: %d processes x dataset.batch_size %d = global batch %d per D step",
                     self._world, self.batch_size, self._world * self.batch_size)

    def on_train_start(self) -> None:
        for reg in self.regularizers:  # after a checkpoint's state is restored
            reg.attach(self)
        self._direct = self._steps_directly()
        # Lightning's wrappers (precision plugin, strategy, hooks) around each backward
        # and optimizer step cost more than a small model's step; on one device without
        # a gradient scaler they do nothing for us, so the raw torch objects are used.
        wrapped = self.optimizers()
        self.optimizers_in_use = [o.optimizer for o in wrapped] if self._direct else wrapped

    def _steps_directly(self) -> bool:
        from pytorch_lightning.plugins.precision import MixedPrecision, Precision
        from pytorch_lightning.strategies import SingleDeviceStrategy

        strategy = self.trainer.strategy
        plugin = strategy.precision_plugin
        no_scaler = type(plugin) is Precision or (
            type(plugin) is MixedPrecision and plugin.scaler is None)
        return isinstance(strategy, SingleDeviceStrategy) and no_scaler

    @property
    def sampler(self) -> nn.Module:
        """The generator of samples and metrics (ganrun.samples): a regularizer's (an
        average of G's weights) if one has it, else G."""
        return self.G_sampler if self.G_sampler is not None else self.G

    def labels_of(self, index: Tensor, dataset_labels: Tensor | None) -> Tensor | None:
        """The labels D is given with real samples number `index`: the labeller's, the
        dataset's when the model is conditional, else none."""
        if self.labeller is not None:
            return self.labeller.real_labels(index.to(self.device))
        if self.num_classes and dataset_labels is not None:
            return dataset_labels[index].to(self.device)
        return None

    # --- checkpoints ----------------------------------------------------------------------

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint.setdefault("ganrun", {}).update({
            "g_steps": self.g_steps,
            "images_seen": self.images_seen,
            "lr_scale": self.lr_scale,
            "regularizers": {r.name: r.state_dict() for r in self.regularizers},
            "data_shape": list(self.data_shape),
            "num_classes": self.num_classes,
            "config": OmegaConf.to_container(self.cfg),
        })  # the random streams: callbacks.checkpoint

    def upgrade_state_dict(self, state_dict: dict) -> dict:
        """A checkpoint's weights under today's names, in place (each regularizer
        renames what older versions saved under other names): older checkpoints load."""
        for reg in self.regularizers:
            reg.upgrade_state_dict(state_dict)
        return state_dict

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.upgrade_state_dict(checkpoint.get("state_dict", {}))
        state = checkpoint.get("ganrun", {})
        self.g_steps = int(state.get("g_steps", 0))
        self.images_seen = int(state.get("images_seen", 0))
        self.lr_scale = float(state.get("lr_scale", 1.0))
        saved = state.get("regularizers", {})
        for reg in self.regularizers:
            if saved.get(reg.name):
                reg.load_state_dict(saved[reg.name])
        for legacy in ("fixed_noise", "fixed_labels"):  # in checkpoints of ganrun <= 0.1
            checkpoint.get("state_dict", {}).pop(legacy, None)

