"""A fleet's networks from its members' own: `stack_models` replaces every layer with
parameters or buffers by its stacked kind (ganrun.fleet.layers), built from the
members' layers, so member k starts with the very weights its standalone run draws;
`member_model` gives member k back as a plain model (its checkpoint, its samples)."""

from __future__ import annotations

import copy

from torch import nn

from ganrun.errors import UserError
from ganrun.fleet.layers import PER_MEMBER, STACKED, MemberDropout, PerMember


def _replace(root: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, layer)


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One module for the members' `models` (one structure): a copy of the first with
    each of its layers that has parameters or buffers stacked over the members; the
    layers without (activations, maxout, containers) stay as they are. A layer that
    cannot be stacked yet is refused, naming it."""
    fleet = copy.deepcopy(models[0])
    stacked = [name for name, module in fleet.named_modules() if type(module) in STACKED]
    for name in stacked:
        layers = [model.get_submodule(name) for model in models]
        if isinstance(layers[0], nn.BatchNorm1d | nn.BatchNorm2d) and layers[0].momentum is None:
            raise UserError(f"{name}: batch norm with a cumulative average (momentum None) "
                            "cannot join a fleet")
        _replace(fleet, name, STACKED[type(layers[0])](layers))
    for name, module in list(fleet.named_modules()):
        if type(module) is nn.Dropout:  # no weights, but random: each member's own mask
            _replace(fleet, name, MemberDropout(module))
        elif isinstance(module, PER_MEMBER):
            _replace(fleet, name, PerMember(module, len(models)))
    kinds = tuple(STACKED.values())
    for name, module in fleet.named_modules():
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if own and not isinstance(module, kinds):
            raise UserError(f"{type(module).__name__} ({name or 'the model'}) cannot join a "
                            f"fleet yet: fleets stack {', '.join(t.__name__ for t in STACKED)}")
    fleet.members = len(models)
    return fleet


def member_model(fleet: nn.Module, template: nn.Module, k: int) -> nn.Module:
    """Member k of `fleet` as a plain model shaped like `template` (one of the models
    it was stacked from): its weights and running statistics (a copy)."""
    model = copy.deepcopy(template)
    kinds = tuple(STACKED.values())
    for name, module in fleet.named_modules():
        if isinstance(module, kinds):
            _replace(model, name, module.member(k))
    return model
