"""Terms added to D's loss (gradient penalty, R1, DRAGAN) and historical averaging
(a term on D's and G's loss)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor, nn

from ganrun import batch
from ganrun.ranges import at_least
from ganrun.regularizers.base import REGULARIZERS, Regularizer, StepContext


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
    joins_fleets, member_numbers = True, ("weight",)

    @dataclass
    class Config:
        weight: float = at_least(0)
        one_sided: bool = MISSING

    def __init__(self, weight: float = 10.0, one_sided: bool = False):
        self.weight = weight
        self.one_sided = one_sided

    def d_penalty(self, ctx: StepContext) -> Tensor:
        real, fake = ctx.real, ctx.fake.detach()
        eps = _per_sample(real, batch.rand(real.shape[0], real))
        x_hat = eps * real + (1.0 - eps) * fake
        gap = input_gradient_norm(ctx.D, x_hat, ctx.real_labels) - 1.0
        if self.one_sided:
            gap = torch.relu(gap)
        return self.weight * batch.mean(gap.pow(2))


@REGULARIZERS.register
class R1Penalty(Regularizer):
    """R1 (Mescheder et al. 2018): gamma / 2 * E_real[||grad D(x)||^2]. With `every` > 1
    it is applied lazily, every N-th D step with its weight times N (StyleGAN2)."""

    name = "r1"
    acts_on_d = True
    joins_fleets, member_numbers = True, ("gamma",)

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
            return batch.mean(ctx.real_out.new_zeros(ctx.real_out.shape))
        norm = input_gradient_norm(ctx.D, ctx.real, ctx.real_labels)
        return 0.5 * self.gamma * self.every * batch.mean(norm.pow(2))

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
    joins_fleets, member_numbers = True, ("weight", "c")

    @dataclass
    class Config:
        weight: float = at_least(0)
        c: float = at_least(0)

    def __init__(self, weight: float = 10.0, c: float = 0.5):
        self.weight = weight
        self.c = c

    def d_penalty(self, ctx: StepContext) -> Tensor:
        real = ctx.real.detach()
        perturbed = real + batch.rows(self.c, real) * batch.std(real) * batch.rand_like(real)
        alpha = _per_sample(real, batch.rand(real.shape[0], real))
        x_hat = real + alpha * (perturbed - real)
        gap = input_gradient_norm(ctx.D, x_hat, ctx.real_labels) - 1.0
        return self.weight * batch.mean(gap.pow(2))




@REGULARIZERS.register
class HistoricalAveraging(Regularizer):
    """Salimans et al. 2016: weight * ||theta - mean of past thetas||^2, on D's
    parameters (and on G's with generator: true)."""

    name = "historical_averaging"
    joins_fleets, member_numbers = True, ("weight",)

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
        return self.weight * sum(batch.total(d.pow(2)) for d in diffs)

    def d_penalty(self, ctx: StepContext) -> Tensor:
        return self._penalty("D")

    def g_penalty(self, ctx: StepContext) -> Tensor:
        if self.generator:
            return self._penalty("G")
        return batch.mean(ctx.fake_out.new_zeros(ctx.fake_out.shape))

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

    def member_state(self, part) -> dict:
        return {"averages": {net: [part(p, a) for p, a in zip(self.nets[net], averages,
                                                                strict=True)]
                             for net, averages in self.averages.items()},
                "counts": dict(self.counts)}

    @torch.no_grad()
    def load_member_state(self, state: dict, part) -> None:
        for net, averages in state.get("averages", {}).items():
            if net not in self.averages:
                self.averages[net] = [p.detach().clone() for p in self.nets[net]]
            for p, mine, saved in zip(self.nets[net], self.averages[net], averages, strict=True):
                part(p, mine).copy_(saved)
        self.counts = dict(state.get("counts", self.counts))
