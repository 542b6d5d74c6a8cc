"""Penalties, constraints and tricks, one small class each, acting through explicit hooks.

A regularizer overrides only the hooks it needs; the training step calls only those:

- `wrap(G, D)`                  structural changes before optimizers exist
- `d_inputs(x, step)`           every input D sees (instance noise)
- `d_fakes(fake)`               the fake batch of a D step (experience replay)
- `targets(rt, ft, r, f)`       real / fake targets of D's loss (label smoothing, noise)
- `d_penalty(ctx)`              a term added to D's loss (gradient penalty, R1, DRAGAN)
- `g_penalty(ctx)`              a term added to G's loss (feature matching, diversity)
- `after_d_step(D)`, `after_g_step(G)`   after each update (clipping, averages)
- `unroll(D, objective, optimizer, rule)`  the D parameters G's loss is taken against (Unrolled GAN)
- `after_step(module)`          after the generator step, with the whole module (DynGAN)

A regularizer may also change what D judges: `pack` > 1 builds D for `pack`
samples at once (PacGAN).

`ctx` is a `StepContext`. Regularizers that keep state across steps (running
averages, a replay buffer) save it with the checkpoint via `state_dict()`.

Each class is registered under its name with its config schema (`Config`, every
field MISSING: configs/regularizer/<name>.yaml holds the defaults), its traits
(`acts_on_d`, `excludes`) and its own value rules (`check`).
"""

from __future__ import annotations

import copy
import inspect
import math
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ganrun.errors import UserError
from ganrun.models.layers import Maxout
from ganrun.ranges import above, at_least, between
from ganrun.registry import Registry

REGULARIZERS = Registry("regularizer")

HOOKS = ("d_inputs", "d_fakes", "targets", "d_penalty", "g_penalty", "after_d_step",
         "after_g_step", "unroll", "after_step")
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, Maxout)


@dataclass
class StepContext:
    real: Tensor
    fake: Tensor
    real_out: Tensor
    fake_out: Tensor
    D: nn.Module
    real_feat: Tensor | None = None
    fake_feat: Tensor | None = None
    real_labels: Tensor | None = None
    z: Tensor | None = None


class Regularizer:
    name = "regularizer"
    order = 0  # wrap order: structural changes first, copies of G (ema) last
    needs_real_features = False  # whether g_penalty reads D's features of the real batch
    acts_on_d = False  # on D's inputs, outputs, weights or loss: needs a trained D
    excludes: tuple[str, ...] = ()  # regularizers it cannot be combined with, and why
    excludes_why = ""
    pack = 1  # samples D judges at once (PacGAN)
    conditions = 0  # classes G and D are conditioned on, the regularizer's own (DynGAN)

    @dataclass
    class Config:
        pass

    @staticmethod
    def check(params, cfg) -> None:
        """Rules beyond the schema's types (raise UserError naming the key)."""

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        pass

    def d_inputs(self, x: Tensor, step: int) -> Tensor:
        return x

    def d_fakes(self, fake: Tensor) -> Tensor:
        return fake

    def targets(self, real_target: Any, fake_target: Any, real_out: Tensor,
                fake_out: Tensor) -> tuple[Any, Any]:
        return real_target, fake_target

    def d_penalty(self, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def g_penalty(self, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def after_d_step(self, D: nn.Module) -> None:
        pass

    def after_g_step(self, G: nn.Module) -> None:
        pass

    def unroll(self, D: nn.Module, objective, optimizer, rule) -> dict[str, Tensor]:
        raise NotImplementedError

    def after_step(self, module) -> None:
        """After the whole generator step, with the module (DynGAN's detection)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @classmethod
    def hooks(cls) -> set[str]:
        """The hooks this class overrides."""
        return {h for h in HOOKS if getattr(cls, h) is not getattr(Regularizer, h)}


# --- penalties on D ---------------------------------------------------------------------


def input_gradient_norm(D: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """Per-sample L2 norm of grad_x D(x), with the graph kept for double backward."""
    x = x.detach().requires_grad_(True)
    out = D(x) if labels is None else D(x, labels)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1).norm(2, dim=1)


def _per_sample(like: Tensor, fill: Tensor) -> Tensor:
    return fill.view((like.shape[0],) + (1,) * (like.dim() - 1))


@REGULARIZERS.register
class GradientPenalty(Regularizer):
    """WGAN-GP: weight * E[(||grad D(x_hat)|| - 1)^2], x_hat on real-fake lines."""

    name = "gradient_penalty"
    acts_on_d = True

    @dataclass
    class Config:
        weight: float = at_least(0)
        one_sided: bool = MISSING

    def __init__(self, weight: float = 10.0, one_sided: bool = False):
        self.weight = weight
        self.one_sided = one_sided

    def d_penalty(self, ctx: StepContext) -> Tensor:
        real, fake = ctx.real, ctx.fake.detach()
        eps = _per_sample(real, torch.rand(real.shape[0], device=real.device, dtype=real.dtype))
        x_hat = eps * real + (1.0 - eps) * fake
        gap = input_gradient_norm(ctx.D, x_hat, ctx.real_labels) - 1.0
        if self.one_sided:
            gap = torch.relu(gap)
        return self.weight * gap.pow(2).mean()


@REGULARIZERS.register
class R1Penalty(Regularizer):
    """R1 (Mescheder et al. 2018): gamma / 2 * E_real[||grad D(x)||^2]. With `every` > 1
    it is applied lazily, every N-th D step with its weight times N (StyleGAN2)."""

    name = "r1"
    acts_on_d = True

    @dataclass
    class Config:
        gamma: float = at_least(0)
        every: int = at_least(1)

    def __init__(self, gamma: float = 10.0, every: int = 1):
        self.gamma = gamma
        self.every = every
        self.calls = 0

    def d_penalty(self, ctx: StepContext) -> Tensor:
        self.calls += 1
        if (self.calls - 1) % self.every:
            return ctx.real_out.new_zeros(())
        norm = input_gradient_norm(ctx.D, ctx.real, ctx.real_labels)
        return 0.5 * self.gamma * self.every * norm.pow(2).mean()

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = state.get("calls", 0)


@REGULARIZERS.register
class DRAGANPenalty(Regularizer):
    """DRAGAN (Kodali et al. 2017): weight * E[(||grad D(x_hat)|| - 1)^2] with x_hat
    between real x and x + c * std(x) * U[0, 1] noise (a neighbourhood of the data)."""

    name = "dragan"
    acts_on_d = True

    @dataclass
    class Config:
        weight: float = at_least(0)
        c: float = at_least(0)

    def __init__(self, weight: float = 10.0, c: float = 0.5):
        self.weight = weight
        self.c = c

    def d_penalty(self, ctx: StepContext) -> Tensor:
        real = ctx.real.detach()
        perturbed = real + self.c * real.std() * torch.rand_like(real)
        alpha = _per_sample(real, torch.rand(real.shape[0], device=real.device, dtype=real.dtype))
        x_hat = real + alpha * (perturbed - real)
        gap = input_gradient_norm(ctx.D, x_hat, ctx.real_labels) - 1.0
        return self.weight * gap.pow(2).mean()


# --- constraints and structure ----------------------------------------------------------


@REGULARIZERS.register
class WeightClip(Regularizer):
    """WGAN weight clipping: every D parameter into [-clip, clip] after each D step."""

    name = "weight_clip"
    acts_on_d = True
    excludes = ("spectral_norm",)
    excludes_why = "both constrain D's Lipschitz constant"

    @dataclass
    class Config:
        clip: float = above(0)

    def __init__(self, clip: float = 0.01):
        self.clip = clip
        self._params: list[Tensor] = []

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        self._params = list(D.parameters())

    @torch.no_grad()
    def after_d_step(self, D: nn.Module) -> None:
        torch._foreach_clamp_min_(self._params, -self.clip)
        torch._foreach_clamp_max_(self._params, self.clip)


@REGULARIZERS.register
class SpectralNorm(Regularizer):
    """Spectral normalisation (Miyato et al. 2018) of D's (and optionally G's) weights."""

    name = "spectral_norm"
    acts_on_d = True

    @dataclass
    class Config:
        n_power_iterations: int = at_least(1)
        generator: bool = MISSING

    order = 5  # after the layers other regularizers add to D's head

    def __init__(self, n_power_iterations: int = 1, generator: bool = False):
        self.n_power_iterations = n_power_iterations
        self.generator = generator

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        for net in (D, G) if self.generator else (D,):
            for module in list(net.modules()):
                if isinstance(module, nn.Linear | nn.Conv2d | nn.ConvTranspose2d | nn.Embedding):
                    nn.utils.parametrizations.spectral_norm(
                        module, n_power_iterations=self.n_power_iterations
                    )


@REGULARIZERS.register
class Dropout(Regularizer):
    """Dropout after every hidden activation of D (and/or G); G's output is left alone."""

    name = "dropout"

    @dataclass
    class Config:
        rate: float = between(0, 1, high_open=True)
        d: bool = MISSING
        g: bool = MISSING

    @staticmethod
    def check(params, cfg) -> None:
        if not (params.d or params.g):
            raise UserError("regularizer.dropout: set d=true and/or g=true")

    def __init__(self, rate: float = 0.3, d: bool = True, g: bool = False):
        self.rate, self.d, self.g = rate, d, g

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        for net, wanted in ((D, self.d), (G, self.g)):
            if wanted:
                _after_activations(net, lambda: nn.Dropout(self.rate),
                                   skip=getattr(net, "out_activation", None))


def _after_activations(net: nn.Module, make, skip: nn.Module | None) -> None:
    for parent in list(net.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, ACTIVATIONS) and child is not skip:
                parent._modules[name] = nn.Sequential(child, make())


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. 2016: features f (N, A) -> M = f T as (N, B, C); for each of the B
    kernels, o_b(x_i) = sum_j exp(-||M_i,b - M_j,b||_1); returns [f, o] of (N, A + B)."""

    def __init__(self, in_features: int, kernels: int, kernel_dim: int):
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, f: Tensor) -> Tensor:
        m = (f @ self.T).view(-1, self.kernels, self.kernel_dim)
        l1 = (m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(3)  # (N, N, B)
        o = torch.exp(-l1).sum(1) - 1.0  # leave out each sample's match with itself
        return torch.cat([f, o], dim=1)


class MinibatchStdDev(nn.Module):
    """ProGAN (Karras et al. 2018): append the mean over features of the standard
    deviation across groups of `group_size` samples, as one more feature."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, f: Tensor) -> Tensor:
        n = f.shape[0]
        g = math.gcd(self.group_size, n)
        std = f.view(g, n // g, -1).var(0, unbiased=False).add(1e-8).sqrt()  # (N/g, A)
        stat = std.mean(1, keepdim=True).repeat(g, 1)  # group member i -> row i % (N/g)
        return torch.cat([f, stat], dim=1)


def _extend_head(D: nn.Module, layer: nn.Module, extra: int) -> None:
    """Put `layer` (features -> features + `extra` columns) before D's final linear."""
    head = D.head
    layers = list(head) if isinstance(head, nn.Sequential) else [head]
    final = layers[-1]
    layers = layers[:-1] + [layer, nn.Linear(final.in_features + extra, final.out_features)]
    D.head = nn.Sequential(*layers)


@REGULARIZERS.register
class MinibatchDiscriminationLayer(Regularizer):
    name = "minibatch_discrimination"
    acts_on_d = True

    @dataclass
    class Config:
        kernels: int = at_least(1)
        kernel_dim: int = at_least(1)

    def __init__(self, kernels: int = 32, kernel_dim: int = 8):
        self.kernels, self.kernel_dim = kernels, kernel_dim

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        in_features = _head_in_features(D)
        _extend_head(D, MinibatchDiscrimination(in_features, self.kernels, self.kernel_dim),
                     self.kernels)


@REGULARIZERS.register
class MinibatchStdDevLayer(Regularizer):
    name = "minibatch_stddev"
    acts_on_d = True

    @dataclass
    class Config:
        group_size: int = at_least(2)

    def __init__(self, group_size: int = 4):
        self.group_size = group_size

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        _extend_head(D, MinibatchStdDev(self.group_size), 1)


def _head_in_features(D: nn.Module) -> int:
    head = D.head
    return (list(head)[-1] if isinstance(head, nn.Sequential) else head).in_features


@REGULARIZERS.register
class PacGAN(Regularizer):
    """PacGAN (Lin et al. 2018): D judges `pack` samples at once, concatenated along
    the channels (images) or features (points); real packs hold only real samples and
    fake packs only generated ones. D is built for the packed input. As in the paper,
    dataset.batch_size counts D's decisions: a D step takes batch_size x pack samples
    of each kind."""

    name = "pacgan"
    acts_on_d = True

    @dataclass
    class Config:
        pack: int = at_least(2)

    @staticmethod
    def check(params, cfg) -> None:
        if cfg.model.conditional:
            raise UserError("regularizer pacgan judges packs of samples of different classes: "
                            "it cannot be combined with model.conditional=true")

    def __init__(self, pack: int = 2):
        self.pack = pack


# --- targets and inputs -------------------------------------------------------------------


@REGULARIZERS.register
class LabelSmoothing(Regularizer):
    """One-sided label smoothing (Salimans et al. 2016): the real target becomes alpha."""

    name = "label_smoothing"
    acts_on_d = True

    @dataclass
    class Config:
        alpha: float = between(0, 1)

    def __init__(self, alpha: float = 0.9):
        self.alpha = alpha

    def targets(self, real_target, fake_target, real_out, fake_out):
        return real_target * self.alpha, fake_target


@REGULARIZERS.register
class LabelNoise(Regularizer):
    """Flips a random `fraction` of D's targets: real samples get the fake target and
    fake samples the real one."""

    name = "label_noise"
    acts_on_d = True

    @dataclass
    class Config:
        fraction: float = between(0, 1)

    def __init__(self, fraction: float = 0.05):
        self.fraction = fraction

    def targets(self, real_target, fake_target, real_out, fake_out):
        flip_real = torch.rand_like(real_out) < self.fraction
        flip_fake = torch.rand_like(fake_out) < self.fraction
        rt = torch.as_tensor(real_target, dtype=real_out.dtype, device=real_out.device)
        ft = torch.as_tensor(fake_target, dtype=real_out.dtype, device=real_out.device)
        return torch.where(flip_real, ft, rt), torch.where(flip_fake, rt, ft)


@REGULARIZERS.register
class InstanceNoise(Regularizer):
    """Gaussian noise on every D input (Sønderby et al. 2017), its std annealed linearly
    from `std` to 0 over `anneal_steps` generator steps."""

    name = "instance_noise"
    acts_on_d = True

    @dataclass
    class Config:
        std: float = at_least(0)
        anneal_steps: int | None = at_least(1)

    def __init__(self, std: float = 0.1, anneal_steps: int | None = None, total_steps: int = 1):
        self.std = std
        self.anneal_steps = anneal_steps or total_steps

    def current_std(self, step: int) -> float:
        return self.std * max(0.0, 1.0 - step / self.anneal_steps)

    def d_inputs(self, x: Tensor, step: int) -> Tensor:
        std = self.current_std(step)
        return x + std * torch.randn_like(x) if std > 0 else x


@REGULARIZERS.register
class ExperienceReplay(Regularizer):
    """A buffer of past fakes (Pfau & Vinyals 2016; Shrivastava et al. 2017): a `fraction`
    of each D step's fake batch is replaced by samples drawn from the buffer, and as many
    of the current fakes are written into it (oldest first)."""

    name = "experience_replay"
    acts_on_d = True

    @dataclass
    class Config:
        size: int = at_least(1)
        fraction: float = between(0, 1)

    @staticmethod
    def check(params, cfg) -> None:
        if cfg.model.conditional:
            raise UserError("regularizer experience_replay keeps past fakes without their "
                            "labels: it cannot be combined with model.conditional=true")

    def __init__(self, size: int = 2048, fraction: float = 0.5):
        self.size, self.fraction = size, fraction
        self.buffer: Tensor | None = None
        self.filled = 0
        self.cursor = 0

    def d_fakes(self, fake: Tensor) -> Tensor:
        k = int(fake.shape[0] * self.fraction)
        if k == 0:
            return fake
        fake = fake.detach()
        if self.buffer is None:
            self.buffer = fake.new_empty((self.size,) + tuple(fake.shape[1:]))
        mixed = fake
        if self.filled >= k:
            index = torch.randint(self.filled, (k,), device=fake.device)
            mixed = torch.cat([self.buffer[index], fake[k:]])
        slots = (self.cursor + torch.arange(k, device=fake.device)) % self.size
        self.buffer[slots] = fake[:k]
        self.cursor = (self.cursor + k) % self.size
        self.filled = min(self.size, self.filled + k)
        return mixed

    def state_dict(self) -> dict:
        return {"buffer": self.buffer, "filled": self.filled, "cursor": self.cursor}

    def load_state_dict(self, state: dict) -> None:
        self.buffer, self.filled, self.cursor = state["buffer"], state["filled"], state["cursor"]


@REGULARIZERS.register
class Unrolled(Regularizer):
    """Unrolled GAN (Metz et al. 2017): G's loss is taken against D after `steps`
    more updates of D's own rule (the D optimizer's, from its current moments) on the
    step's real and generated batch, differentiated through those updates, so G
    answers D's reply to its move. D's own update is unchanged; the unrolled
    parameters are thrown away. The unrolled objective is D's loss without penalties."""

    name = "unrolled"
    acts_on_d = True

    @dataclass
    class Config:
        steps: int = at_least(1)

    @staticmethod
    def check(params, cfg) -> None:
        from ganrun.optim import OPTIMIZERS

        able = [n for n, c in OPTIMIZERS.items() if c.differentiable]
        if cfg.optim.name not in able:
            raise UserError(f"regularizer unrolled differentiates through D's optimizer; "
                            f"optim={cfg.optim.name} has no differentiable update (use "
                            f"{' or '.join(able)})")

    def __init__(self, steps: int = 5):
        self.steps = steps

    def unroll(self, D: nn.Module, objective, optimizer, rule) -> dict[str, Tensor]:
        """D's parameters after `steps` updates of `objective(params) -> D's loss` by
        `rule` (ganrun.optim, starting from the torch `optimizer`'s moments), as functions
        of G's output (the graph is kept), and D's buffers, copied."""
        named = dict(D.named_parameters())
        names, params = list(named), list(named.values())
        slots = rule.slots(optimizer, params)
        group = optimizer.param_groups[0]
        buffers = {k: b.clone() for k, b in D.named_buffers()}  # batch norm: no side effects
        current = [p.detach().requires_grad_(True) for p in params]
        for i in range(self.steps):
            loss = objective({**dict(zip(names, current, strict=True)), **buffers})
            grads = torch.autograd.grad(loss, current, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g  # unused by the loss (mmd: the head)
                     for p, g in zip(current, grads, strict=True)]
            current, slots = rule.unrolled_step(current, grads, slots, group, i)
        return {**dict(zip(names, current, strict=True)), **buffers}


# --- penalties on G ---------------------------------------------------------------------


@REGULARIZERS.register
class FeatureMatching(Regularizer):
    """Salimans et al. 2016: weight * ||E_real f(x) - E_fake f(G(z))||_2^2 on D's
    last hidden features f, added to G's loss."""

    name = "feature_matching"
    acts_on_d = True

    @dataclass
    class Config:
        weight: float = at_least(0)

    needs_real_features = True

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def g_penalty(self, ctx: StepContext) -> Tensor:
        gap = ctx.real_feat.detach().mean(0) - ctx.fake_feat.mean(0)
        return self.weight * gap.pow(2).sum()


@REGULARIZERS.register
class Diversity(Regularizer):
    """Mode seeking (Mao et al. 2019): with the batch split in halves (z1, z2),
    ratio = mean|G(z1) - G(z2)| / mean|z1 - z2|; G's loss gets weight / (ratio + eps)."""

    name = "diversity"

    @dataclass
    class Config:
        weight: float = at_least(0)
        eps: float = above(0)

    @staticmethod
    def check(params, cfg) -> None:
        if cfg.dataset.batch_size < 2:
            raise UserError("regularizer diversity compares pairs of samples: "
                            "dataset.batch_size >= 2")

    def __init__(self, weight: float = 1.0, eps: float = 1e-5):
        self.weight, self.eps = weight, eps

    def g_penalty(self, ctx: StepContext) -> Tensor:
        half = ctx.fake.shape[0] // 2
        fake1, fake2 = ctx.fake[:half], ctx.fake[half:2 * half]
        z1, z2 = ctx.z[:half], ctx.z[half:2 * half]
        ratio = (fake1 - fake2).abs().mean() / (z1 - z2).abs().mean()
        return self.weight / (ratio + self.eps)


@REGULARIZERS.register
class HistoricalAveraging(Regularizer):
    """Salimans et al. 2016: weight * ||theta - mean of past thetas||^2, on D's
    parameters (and on G's with generator: true)."""

    name = "historical_averaging"

    @dataclass
    class Config:
        weight: float = at_least(0)
        generator: bool = MISSING

    def __init__(self, weight: float = 1e-3, generator: bool = True):
        self.weight, self.generator = weight, generator
        self.nets: dict[str, list[Tensor]] = {}
        self.averages: dict[str, list[Tensor]] = {}
        self.counts = {"D": 0, "G": 0}

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        self.nets = {"D": list(D.parameters())}
        if self.generator:
            self.nets["G"] = list(G.parameters())

    def _penalty(self, net: str) -> Tensor:
        params = self.nets[net]
        if net not in self.averages:  # created lazily, on the parameters' device
            self.averages[net] = [p.detach().clone() for p in params]
        diffs = torch._foreach_sub(params, self.averages[net])
        return self.weight * sum(d.pow(2).sum() for d in diffs)

    def d_penalty(self, ctx: StepContext) -> Tensor:
        return self._penalty("D")

    def g_penalty(self, ctx: StepContext) -> Tensor:
        return self._penalty("G") if self.generator else ctx.fake_out.new_zeros(())

    @torch.no_grad()
    def _update(self, net: str) -> None:
        if net in self.averages:
            self.counts[net] += 1
            # cumulative mean: avg += (theta - avg) / (t + 1), t counting the initial weights
            torch._foreach_lerp_(self.averages[net], [p.detach() for p in self.nets[net]],
                                 1.0 / (self.counts[net] + 1))

    def after_d_step(self, D: nn.Module) -> None:
        self._update("D")

    def after_g_step(self, G: nn.Module) -> None:
        self._update("G")

    def state_dict(self) -> dict:
        return {"averages": self.averages, "counts": self.counts}

    def load_state_dict(self, state: dict) -> None:
        self.averages, self.counts = state["averages"], state["counts"]


@REGULARIZERS.register
class EMA(Regularizer):
    """An exponential moving average of G's weights (Yazici et al. 2019), used for
    samples and metrics: ema <- d * ema + (1 - d) * theta after each G step.
    Buffers (batch-norm statistics) are copied.

    With `warmup`, d = min(decay, (1 + t) / (10 + t)) at the t-th update (the rule of
    TensorFlow's ExponentialMovingAverage with num_updates): a constant 0.999 would
    keep the average near G's random start for thousands of steps, so short runs
    would judge an untrained generator."""

    name = "ema"
    order = 10  # copies G after every structural change

    @dataclass
    class Config:
        decay: float = between(0, 1)
        warmup: bool = MISSING

    def __init__(self, decay: float = 0.999, warmup: bool = True):
        self.decay, self.warmup = decay, warmup
        self.updates = 0
        self.model: nn.Module | None = None

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    def current_decay(self) -> float:
        t = self.updates
        return min(self.decay, (1 + t) / (10 + t)) if self.warmup else self.decay

    @torch.no_grad()
    def after_g_step(self, G: nn.Module) -> None:
        ema_params = list(self.model.parameters())
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_(ema_params, [p.detach() for p in G.parameters()], weight)
        self.updates += 1
        for ema_buf, buf in zip(self.model.buffers(), G.buffers(), strict=True):
            ema_buf.copy_(buf)

    def state_dict(self) -> dict:
        return {"updates": self.updates}  # the weights are in the module's state dict

    def load_state_dict(self, state: dict) -> None:
        self.updates = state.get("updates", 0)


def pack_of(cfg) -> int:
    """Samples D judges at once under the `regularizer` node `cfg` (PacGAN's pack, or 1)."""
    return max((REGULARIZERS[name].pack if params is None or "pack" not in params
                else params.pack for name, params in cfg.items()), default=1)


def build_regularizers(cfg, total_steps: int = 1) -> list[Regularizer]:
    """One instance per key of `cfg` (the `regularizer` node), in wrap order."""
    regs = []
    for name, params in cfg.items():
        kwargs = dict(params or {})
        cls = REGULARIZERS[name]
        if "total_steps" in inspect.signature(cls.__init__).parameters:  # schedules
            kwargs["total_steps"] = total_steps
        regs.append(cls(**kwargs))
    return sorted(regs, key=lambda r: (r.order, r.name))


from ganrun import dyngan  # noqa: E402, F401  (registers DynGAN, which builds on the above)
