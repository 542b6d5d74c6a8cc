"""Terms added to G's loss: feature matching and diversity (mode seeking)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ganrun import batch
from ganrun.errors import UserError
from ganrun.ranges import above, at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer, StepContext


@REGULARIZERS.register
class FeatureMatching(Regularizer):
    """Salimans et al. 2016: weight * ||E_real f(x) - E_fake f(G(z))||_2^2 on D's
    last hidden features f, added to G's loss."""

    name = "feature_matching"
    acts_on_d = True
    joins_fleets, member_numbers = True, ("weight",)

    @dataclass
    class Config:
        weight: float = at_least(0)

    needs_real_features = True

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def g_penalty(self, ctx: StepContext) -> Tensor:
        gap = batch.mean_rows(ctx.real_feat.detach()) - batch.mean_rows(ctx.fake_feat)
        return self.weight * batch.total(gap.pow(2))


@REGULARIZERS.register
class Diversity(Regularizer):
    """Mode seeking (Mao et al. 2019): with the batch split in halves (z1, z2),
    ratio = mean|G(z1) - G(z2)| / mean|z1 - z2|; G's loss gets weight / (ratio + eps)."""

    name = "diversity"
    joins_fleets, member_numbers = True, ("weight", "eps")

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
        fake1, fake2 = batch.halves(ctx.fake)
        z1, z2 = batch.halves(ctx.z)
        ratio = batch.mean((fake1 - fake2).abs()) / batch.mean((z1 - z2).abs())
        return self.weight / (ratio + self.eps)
