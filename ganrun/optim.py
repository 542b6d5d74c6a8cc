"""Optimizers, one small class each: its config schema and how it is built.

Every optimizer config has the keys of `OptimConfig` (separate G and D rates,
D steps per G step, decay); an optimizer adds its own in its `Config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from omegaconf import MISSING

from ganrun.registry import Registry

OPTIMIZERS = Registry("optimizer")
DECAYS = ("none", "linear", "cosine")


@dataclass
class OptimConfig:
    name: str = MISSING
    lr_g: float = MISSING
    lr_d: float = MISSING
    weight_decay: float = MISSING
    n_critic: int = MISSING
    n_gen: int = MISSING
    decay: str = MISSING


class Optimizer:
    name = "optimizer"
    Config = OptimConfig

    @staticmethod
    def build(cfg, params, lr: float) -> torch.optim.Optimizer:
        raise NotImplementedError

    @staticmethod
    def check(cfg, root) -> None:
        pass


@OPTIMIZERS.register
class Adam(Optimizer):
    name = "adam"

    @dataclass
    class Config(OptimConfig):
        betas: list[float] = MISSING
        eps: float = MISSING

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.Adam(params, lr=lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class RMSprop(Optimizer):
    name = "rmsprop"

    @dataclass
    class Config(OptimConfig):
        alpha: float = MISSING
        eps: float = MISSING
        momentum: float = MISSING

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.RMSprop(params, lr=lr, alpha=cfg.alpha, eps=cfg.eps,
                                   momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class SGD(Optimizer):
    name = "sgd"

    @dataclass
    class Config(OptimConfig):
        momentum: float = MISSING
        nesterov: bool = MISSING

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class Adagrad(Optimizer):
    name = "adagrad"

    @dataclass
    class Config(OptimConfig):
        eps: float = MISSING

    @staticmethod
    def build(cfg, params, lr):
        return torch.optim.Adagrad(params, lr=lr, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register
class Adadelta(Optimizer):
    name = "adadelta"

    @dataclass
    class Config(OptimConfig):
        rho: float = MISSING
        eps: float = MISSING

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
