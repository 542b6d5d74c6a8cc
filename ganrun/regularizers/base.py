"""The Regularizer base class: hooks the training step calls, and traits the core asks for.

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

And declares traits, which the core (ganrun/training, ganrun/callbacks) asks every
regularizer for, never naming one:

- `samples_per_decision`        samples D judges at once (PacGAN's pack): D is built for
                                them and a D step draws dataset.batch_size x this many
- `conditions`                  classes of its own that G and D are conditioned on; such a
                                regularizer is the source of labels: `real_labels(index)`
                                for the real samples (the batch carries their numbers) and
                                `sample_labels(n)` for generated ones (DynGAN's partitions)
- `sampler()`                   the network samples and metrics come from (EMA's copy of G)
- `summary()`                   its section of metrics.json (DynGAN's partitions)
- `answers`                     the failures it is a remedy for (the health monitor's advice)

`ctx` is a `StepContext`. Regularizers that keep state across steps (running
averages, a replay buffer) save it with the checkpoint via `state_dict()`.

Each class is registered under its name with its config schema (`Config`, every
field MISSING: configs/regularizer/<name>.yaml holds the defaults), its traits
(`acts_on_d`, `excludes`) and its own value rules (`check`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ganrun.registry import Registry

REGULARIZERS = Registry("regularizer")

HOOKS = ("d_inputs", "d_fakes", "targets", "d_penalty", "g_penalty", "after_d_step",
         "after_g_step", "unroll", "after_step")


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
    samples_per_decision = 1  # samples D judges at once (PacGAN's pack)
    conditions = 0  # classes G and D are conditioned on, the regularizer's own (DynGAN)
    label_kind = "labels"  # what its labels are, in messages ("partitions")
    answers: tuple[str, ...] = ()  # failures it is a remedy for: "mode_collapse", ...
    trait_keys: dict[str, str] = {}  # a trait whose value a config key sets: {trait: key}
    # Fleets (ganrun.fleet): whether it acts on a fleet's step member by member (its draws
    # and means through ganrun.batch), and the keys each member may set to its own value.
    joins_fleets = False
    member_numbers: tuple[str, ...] = ()
    shares_optimizer_numbers = False  # a fleet's members then share optim's numbers

    @dataclass
    class Config:
        pass

    @staticmethod
    def check(params, cfg) -> None:
        """Rules beyond the schema's types (raise UserError naming the key)."""

    def wrap(self, G: nn.Module, D: nn.Module) -> None:
        pass

    def rewrap(self, G: nn.Module, D: nn.Module) -> None:
        """Act on a fleet's stacked G and D, made from members it has wrapped: what
        `wrap` takes of them again; a change of structure is in the stack already."""
        self.wrap(G, D)

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

    # --- traits the core asks for (see the module's docstring) -------------------------

    def real_labels(self, index: Tensor) -> Tensor:
        """The labels of real samples number `index` (with `conditions` > 0)."""
        raise NotImplementedError

    def sample_labels(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Labels for n generated samples (with `conditions` > 0)."""
        raise NotImplementedError

    def attach(self, module) -> None:
        """At the start of training (after a checkpoint is restored), with the module."""

    def sampler(self) -> nn.Module | None:
        """The network samples and metrics come from instead of G; None: G."""
        return None

    def summary(self) -> dict:
        """Its section of metrics.json (under its name); {}: none."""
        return {}

    def upgrade_state_dict(self, state_dict: dict) -> None:
        """Rename, in place, the module weights an older ganrun saved under other names."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def member_state(self, part: Callable[[Tensor, Tensor], Tensor]) -> dict:
        """In a fleet (ganrun.fleet): one member's state, what its checkpoint holds;
        `part(param, t)` is that member's part (a copy) of a tensor `t` shaped like the
        stacked parameter `param`. By default the whole state (counts the members share)."""
        return self.state_dict()

    def load_member_state(self, state: dict, part: Callable[[Tensor, Tensor], Tensor]) -> None:
        """In a fleet: one member's `state` (its checkpoint's) into the fleet's own;
        `part(param, t)` is that member's part of `t`, a view to write into."""
        self.load_state_dict(state)

    @classmethod
    def hooks(cls) -> set[str]:
        """The hooks this class overrides."""
        return {h for h in HOOKS if getattr(cls, h) is not getattr(Regularizer, h)}


def samples_per_decision(cfg) -> int:
    """Samples D judges at once under the `regularizer` node `cfg` (1 unless a
    regularizer declares more, as PacGAN's pack)."""
    return max((_trait(name, params, "samples_per_decision") for name, params in cfg.items()),
               default=1)


def supplies_labels(cfg) -> bool:
    """Whether a regularizer of the `regularizer` node `cfg` is the source of labels (then
    the batches carry the real samples' numbers)."""
    return any(_trait(name, params, "conditions") for name, params in cfg.items())


def remedies(failure: str) -> list[str]:
    """The registered regularizers that declare themselves a remedy for `failure`."""
    return [name for name, cls in REGULARIZERS.items() if failure in cls.answers]


def _trait(name: str, params, trait: str):
    cls = REGULARIZERS[name]
    source = getattr(cls, "trait_keys", {}).get(trait)
    if source is not None and params is not None and source in params:
        return params[source]
    return getattr(cls, trait)


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
