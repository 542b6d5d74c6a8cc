"""What D sees and is asked: its targets (label smoothing, label noise), noise on its
inputs, and a replay of past fakes."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ganrun import batch
from ganrun.errors import UserError
from ganrun.ranges import at_least, between
from ganrun.regularizers.base import REGULARIZERS, Regularizer


@REGULARIZERS.register
class LabelSmoothing(Regularizer):
    """One-sided label smoothing (Salimans et al. 2016): the real target becomes alpha."""

    name = "label_smoothing"
    acts_on_d = True
    joins_fleets, member_numbers = True, ("alpha",)

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
    joins_fleets, member_numbers = True, ("std",)

    @dataclass
    class Config:
        std: float = at_least(0)
        anneal_steps: int | None = at_least(1)

    def __init__(self, std: float = 0.1, anneal_steps: int | None = None, total_steps: int = 1):
        self.std = std
        self.anneal_steps = anneal_steps or total_steps

    def current_std(self, step: int) -> float | Tensor:
        return self.std * max(0.0, 1.0 - step / self.anneal_steps)

    def d_inputs(self, x: Tensor, step: int) -> Tensor:
        std = self.current_std(step)
        if isinstance(std, Tensor):  # a fleet's members' own
            return x + batch.rows(std, x) * batch.randn_like(x) if bool((std > 0).any()) else x
        return x + std * batch.randn_like(x) if std > 0 else x


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
