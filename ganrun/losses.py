"""Adversarial losses on discriminator outputs (logits / critic values).

Each loss is two functions of what D makes of a batch and knows nothing of the
models: `d_loss(real_out, fake_out, real_target, fake_target)` and
`g_loss(fake_out, real_out)`. `space` says what "out" is: D's outputs (one value
per sample, the default), D's features (mmd) or the samples themselves (mmd with
`space: samples`, which trains no D). Targets are used by the losses that have
them (bce, nsgan, lsgan) and are where label smoothing and label noise act.

Each loss is registered under its name with its config schema (`Config`) and,
where it has rules beyond types, a `check`: one class and one YAML per loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from omegaconf import MISSING
from torch import Tensor

from ganrun.errors import UserError, one_of
from ganrun.ranges import above, finite
from ganrun.registry import Registry

Target = float | Tensor
LOSSES = Registry("loss")


@dataclass
class LossConfig:
    name: str = MISSING


def _bce_d(real_out: Tensor, fake_out: Tensor, real_target: Target, fake_target: Target) -> Tensor:
    # Binary cross-entropy with logits for a (possibly soft) target t:
    # -t log sigmoid(x) - (1 - t) log(1 - sigmoid(x)) = softplus(x) - t x.
    real = F.softplus(real_out) - real_target * real_out
    fake = F.softplus(fake_out) - fake_target * fake_out
    return real.mean() + fake.mean()


class AdversarialLoss:
    """Base: the targets a D loss uses when none are given."""

    name = "loss"
    Config = LossConfig
    real_target: float = 1.0
    fake_target: float = 0.0
    uses_targets = False
    space = "outputs"
    g_uses_real = False  # whether g_loss looks at D's view of the real batch
    # D's decision boundary, for its accuracy (health diagnostics): an output above it
    # says "real". None: the midpoint of the batch's mean real and fake outputs (critics).
    decision: float | None = None

    def d_loss(self, real_out: Tensor, fake_out: Tensor,
               real_target: Target | None = None, fake_target: Target | None = None) -> Tensor:
        raise NotImplementedError

    def g_loss(self, fake_out: Tensor, real_out: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    @staticmethod
    def check(params, cfg) -> None:
        """Rules beyond the schema's types: raise UserError naming the key."""


@LOSSES.register
class MinimaxLoss(AdversarialLoss):
    """Saturating minimax (Goodfellow et al. 2014): G minimises log(1 - D(G(z)))."""

    name = "bce"
    uses_targets = True
    decision = 0.0  # a logit: D(x) = 1/2

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        return _bce_d(real_out, fake_out, _or(real_target, 1.0), _or(fake_target, 0.0))

    def g_loss(self, fake_out, real_out=None):
        # log(1 - sigmoid(x)) = -softplus(x)
        return -F.softplus(fake_out).mean()


@LOSSES.register
class NonSaturatingLoss(MinimaxLoss):
    """Non-saturating GAN: G minimises -log D(G(z)) = softplus(-x)."""

    name = "nsgan"

    def g_loss(self, fake_out, real_out=None):
        return F.softplus(-fake_out).mean()


@LOSSES.register
class WassersteinLoss(AdversarialLoss):
    """WGAN critic (Arjovsky et al. 2017): D minimises E[D(fake)] - E[D(real)]."""

    name = "wgan"

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        return fake_out.mean() - real_out.mean()

    def g_loss(self, fake_out, real_out=None):
        return -fake_out.mean()


@LOSSES.register
class WassersteinGPLoss(WassersteinLoss):
    """The Wasserstein loss of WGAN-GP (the penalty is the preset's regularizer)."""

    name = "wgan_gp"


@LOSSES.register
class LeastSquaresLoss(AdversarialLoss):
    """LSGAN (Mao et al. 2017) with the a-b-c coding."""

    name = "lsgan"
    uses_targets = True

    @dataclass
    class Config(LossConfig):
        a: float = finite()
        b: float = finite()
        c: float = finite()

    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0):
        self.a, self.b, self.c = a, b, c
        self.real_target, self.fake_target = b, a
        self.decision = (a + b) / 2

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        real = (real_out - _or(real_target, self.b)).pow(2).mean()
        fake = (fake_out - _or(fake_target, self.a)).pow(2).mean()
        return 0.5 * (real + fake)

    def g_loss(self, fake_out, real_out=None):
        return 0.5 * (fake_out - self.c).pow(2).mean()


@LOSSES.register
class HingeLoss(AdversarialLoss):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018)."""

    name = "hinge"
    decision = 0.0

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        return torch.relu(1.0 - real_out).mean() + torch.relu(1.0 + fake_out).mean()

    def g_loss(self, fake_out, real_out=None):
        return -fake_out.mean()


@LOSSES.register
class RelativisticAverageLoss(AdversarialLoss):
    """RaSGAN (Jolicoeur-Martineau 2018): D judges whether real data is more realistic
    than the average fake, and the reverse; G gets the mirrored loss."""

    name = "ragan"
    g_uses_real = True

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        real_rel = real_out - fake_out.mean()
        fake_rel = fake_out - real_out.mean()
        return F.softplus(-real_rel).mean() + F.softplus(fake_rel).mean()

    def g_loss(self, fake_out, real_out=None):
        real_rel = real_out - fake_out.mean()
        fake_rel = fake_out - real_out.mean()
        return F.softplus(real_rel).mean() + F.softplus(-fake_rel).mean()


@LOSSES.register
class MMDLoss(AdversarialLoss):
    """MMD GAN (Li et al. 2017; Binkowski et al. 2018): G minimises the squared kernel
    MMD between real and fake D features (or raw samples); D maximises it."""

    name = "mmd"
    g_uses_real = True

    @dataclass
    class Config(LossConfig):
        space: str = MISSING
        kernel: str = MISSING
        bandwidths: list[float] = above(0)

    @staticmethod
    def check(params, cfg) -> None:
        one_of("loss.space", params.space, ("features", "samples"))
        one_of("loss.kernel", params.kernel, ("rbf", "rq"))
        if not params.bandwidths:  # each > 0: its declared range
            raise UserError("loss.bandwidths=[]: must be a non-empty list of bandwidths")

    def __init__(self, space: str = "features", kernel: str = "rbf",
                 bandwidths: list[float] | tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0)):
        self.space = space
        self.kernel = kernel
        self.bandwidths = tuple(float(b) for b in bandwidths)

    def d_loss(self, real_out, fake_out, real_target=None, fake_target=None):
        return -mmd2(real_out, fake_out, self.kernel, self.bandwidths)

    def g_loss(self, fake_out, real_out=None):
        return mmd2(real_out, fake_out, self.kernel, self.bandwidths)


def kernel_matrix(a: Tensor, b: Tensor, kernel: str, bandwidths: tuple[float, ...]) -> Tensor:
    """Sum over bandwidths of an RBF kernel exp(-d^2 / (2 s^2)), or of a rational
    quadratic kernel (1 + d^2 / (2 alpha))^-alpha, between the rows of a and b."""
    a, b = a.flatten(1), b.flatten(1)
    sq = (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1) - 2 * a @ b.T).clamp_min(0)
    if kernel == "rbf":
        return sum(torch.exp(-sq / (2 * s * s)) for s in bandwidths)
    return sum((1 + sq / (2 * alpha)).pow(-alpha) for alpha in bandwidths)


def mmd2(x: Tensor, y: Tensor, kernel: str, bandwidths: tuple[float, ...]) -> Tensor:
    """Unbiased estimate of the squared MMD between samples x and y."""
    n, m = x.shape[0], y.shape[0]
    k_xx = kernel_matrix(x, x, kernel, bandwidths)
    k_yy = kernel_matrix(y, y, kernel, bandwidths)
    k_xy = kernel_matrix(x, y, kernel, bandwidths)
    xx = (k_xx.sum() - k_xx.diagonal().sum()) / (n * (n - 1))
    yy = (k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return xx + yy - 2 * k_xy.mean()


def _or(value: Target | None, default: float) -> Target:
    return default if value is None else value


def build_loss(cfg) -> AdversarialLoss:
    """The loss named by `cfg.name`, with its parameters (the other keys)."""
    params = {k: v for k, v in cfg.items() if k != "name"}
    return LOSSES[cfg.name](**params)


def real_probability(real_out: Tensor, fake_out: Tensor | None, probability: bool) -> Tensor:
    """D's view of each real sample as a probability of being real and not generated:
    sigmoid(D(x)) for losses whose D outputs a logit, otherwise the share of the
    generated samples' outputs below D(x)."""
    if probability:
        return torch.sigmoid(real_out.float())
    ranked = fake_out.float().sort().values
    return torch.searchsorted(ranked, real_out.float().contiguous()).float() / ranked.numel()
