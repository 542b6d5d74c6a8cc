"""Terms added to G's loss: feature matching and diversity (mode seeking)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ganrun.errors import UserError
from ganrun.ranges import above, at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer, StepContext


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
