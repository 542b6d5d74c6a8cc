"""Optimizers, one small class each: its config schema and how it is built.

Every optimizer config has the keys of `OptimConfig` (separate G and D rates,
D steps per G step, decay); an optimizer adds its own in its `Config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING
from torch import Tensor

from ganrun.ranges import above, at_least, between
from ganrun.registry import Registry

OPTIMIZERS = Registry("optimizer")
DECAYS = ("none", "linear", "cosine")


@dataclass
class OptimConfig:
    name: str = MISSING
    lr_g: float = above(0)
    lr_d: float = above(0)
    weight_decay: float = at_least(0)
    n_critic: int = at_least(1)
    n_gen: int = at_least(1)
    decay: str = MISSING


class Optimizer:
    name = "optimizer"
    Config = OptimConfig
    differentiable = False  # has `unrolled_step` (regularizer=[unrolled] differentiates through it)

    @staticmethod
    def build(cfg, params, lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    @staticmethod
    def unrolled_step(params: list[Tensor], grads: list[Tensor], slots: dict, group: dict,
                      step: int) -> tuple[list[Tensor], dict]:
        """One update as a differentiable function: new parameters and slots from
        `params`, their `grads` (with graphs), the optimizer's `slots` (moments) and
        its param `group` (lr, betas, ...); `step` counts updates so far."""
        raise NotImplementedError

    @staticmethod
    def slots(optimizer: torch.optim.Optimizer, params: list[Tensor]) -> dict:
        """The optimizer's current state for `params`, detached: where an unroll starts."""
        return {}

    @staticmethod
    def check(cfg, root) -> None:
        pass


@OPTIMIZERS.register
class Adam(Optimizer):
    name = "adam"

    @dataclass
    class Config(OptimConfig):
        betas: list[float] = between(0, 1, high_open=True)
        eps: float = above(0)

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)

    differentiable = True

    @staticmethod
    def slots(optimizer, params):
        state = [optimizer.state.get(p, {}) for p in params]
        if not all(state):  # before D's first update: zero moments
            return {"m": [torch.zeros_like(p) for p in params],
                    "v": [torch.zeros_like(p) for p in params], "step": 0}
        return {"m": [s["exp_avg"].detach() for s in state],
                "v": [s["exp_avg_sq"].detach() for s in state], "step": int(state[0]["step"])}

    @staticmethod
    def unrolled_step(params, grads, slots, group, step):
        (b1, b2), lr, eps, wd = group["betas"], group["lr"], group["eps"], group["weight_decay"]
        t = slots["step"] + 1
        new_params, m_new, v_new = [], [], []
        for p, g, m, v in zip(params, grads, slots["m"], slots["v"], strict=True):
            g = g + wd * p if wd else g
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            # sqrt's derivative is infinite at 0 (a parameter with no gradient yet, as
            # maxout's unused pieces): a floor far below eps keeps the value, not the NaN.
            new_params.append(p - lr * m_hat / (v_hat.clamp(min=1e-30).sqrt() + eps))
            m_new.append(m)
            v_new.append(v)
        return new_params, {"m": m_new, "v": v_new, "step": t}


@OPTIMIZERS.register
class RMSprop(Optimizer):
    name = "rmsprop"

    @dataclass
    class Config(OptimConfig):
        alpha: float = between(0, 1)
        eps: float = above(0)
        momentum: float = between(0, 1, high_open=True)  # 1 or more: the steps grow without end

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class SGD(Optimizer):
    name = "sgd"

    @dataclass
    class Config(OptimConfig):
        momentum: float = between(0, 1, high_open=True)  # as torch's Adam betas: below 1
        nesterov: bool = MISSING

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)

    differentiable = True

    @staticmethod
    def slots(optimizer, params):
        buffers = [optimizer.state.get(p, {}).get("momentum_buffer") for p in params]
        return {"buf": [None if b is None else b.detach() for b in buffers]}

    @staticmethod
    def unrolled_step(params, grads, slots, group, step):
        mu, lr, wd, nesterov = (group["momentum"], group["lr"], group["weight_decay"],
                                group["nesterov"])
        new_params, buffers = [], []
        for p, g, buf in zip(params, grads, slots["buf"], strict=True):
            g = g + wd * p if wd else g
            if mu:
                buf = g if buf is None else mu * buf + g  # torch's SGD: no dampening
                g = g + mu * buf if nesterov else buf
            new_params.append(p - lr * g)
            buffers.append(buf)
        return new_params, {"buf": buffers}


@OPTIMIZERS.register
class Adagrad(Optimizer):
    name = "adagrad"

    @dataclass
    class Config(OptimConfig):
        eps: float = above(0)

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.Adagrad(params, lr=lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class Adadelta(Optimizer):
    name = "adadelta"

    @dataclass
    class Config(OptimConfig):
        rho: float = between(0, 1)
        eps: float = above(0)

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.Adadelta(params, lr=lr, rho=cfg.rho, eps=cfg.eps,
                                    weight_decay=cfg.weight_decay)


def build_optimizer(cfg, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer named by `cfg.name` at learning rate `lr`."""
    return OPTIMIZERS[cfg.name].build(cfg, params, lr)


def lr_factor(decay: str, step: int, total: int) -> float:
    """Learning-rate multiplier after `step` of `total` generator steps."""
    progress = min(step / total, 1.0)
    if decay == "linear":
        return 1.0 - progress
    if decay == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0
