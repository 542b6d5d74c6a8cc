"""A fleet's networks from its members' own: `stack_models` replaces every layer with
parameters or buffers by its stacked kind (ganrun.fleet.layers), built from the
members' layers, so member k starts with the very weights its standalone run draws;
`member_model` gives member k back as a plain model (its checkpoint, its samples)."""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils import parametrize

from ganrun.errors import UserError
from ganrun.fleet.layers import (
    PER_MEMBER,
    STACKED,
    MemberDropout,
    PerMember,
    StackedLinear,
    StackedSpectralNorm,
)


def _replace(root: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, layer)


def _kind(module: nn.Module) -> type:
    """A layer's own class (torch makes a subclass of a parametrized one)."""
    return type(module).__bases__[0] if parametrize.is_parametrized(module) else type(module)


def _spectral_norm(layers: list[nn.Module]) -> list[nn.Module] | None:
    """The members' spectral_norm parametrizations of `weight` (none: None); any other
    parametrization is refused."""
    if not parametrize.is_parametrized(layers[0]):
        return None
    kinds = {type(p).__name__ for layer in layers for name, ps in layer.parametrizations.items()
             for p in ps} | set(layers[0].parametrizations)
    if kinds != {"_SpectralNorm", "weight"}:
        raise UserError(f"{type(layers[0]).__name__}: only spectral norm's parametrization of "
                        "a weight can join a fleet")
    return [layer.parametrizations.weight[0] for layer in layers]


def _plain(layer: nn.Module) -> nn.Module:
    """A parametrized layer as a plain one of its own class sharing its tensors, with its
    original weight as `weight`. (Not parametrize.remove_parametrizations on a copy: a
    copy shares torch's parametrized class, whose `weight` that would delete.)"""
    kind = _kind(layer)
    plain = kind.__new__(kind)
    plain.__dict__.update(layer.__dict__)
    plain._parameters = {**layer._parameters, "weight": layer.parametrizations.weight.original}
    plain._modules = {k: v for k, v in layer._modules.items() if k != "parametrizations"}
    return plain


def stack_models(models: list[nn.Module]) -> nn.Module:
    """One module for the members' `models` (one structure): a copy of the first with
    each of its layers that has parameters or buffers stacked over the members (spectral
    norm's parametrization included); the layers without (activations, maxout,
    containers) stay as they are, those that draw at random or compare a batch's samples
    act per member. A layer that cannot be stacked yet is refused, naming it."""
    fleet = copy.deepcopy(models[0])
    stacked = [name for name, module in fleet.named_modules() if _kind(module) in STACKED]
    for name in stacked:
        layers = [model.get_submodule(name) for model in models]
        if isinstance(layers[0], nn.BatchNorm1d | nn.BatchNorm2d) and layers[0].momentum is None:
            raise UserError(f"{name}: batch norm with a cumulative average (momentum None) "
                            "cannot join a fleet")
        norms = _spectral_norm(layers)
        kind = STACKED[_kind(layers[0])]
        layer = kind([_plain(m) for m in layers] if norms else layers)
        if norms:
            parametrize.register_parametrization(
                layer, "weight", StackedSpectralNorm(norms, transposed=kind is StackedLinear),
                unsafe=True)
        _replace(fleet, name, layer)
    for name, module in list(fleet.named_modules()):
        if type(module) is nn.Dropout:  # no weights, but random: each member's own mask
            _replace(fleet, name, MemberDropout(module))
        elif isinstance(module, PER_MEMBER):
            _replace(fleet, name, PerMember(module, len(models)))
    kinds = tuple(STACKED.values())
    inside = [name + "." for name, module in fleet.named_modules() if isinstance(module, kinds)]
    for name, module in fleet.named_modules():
        own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        if own and not isinstance(module, kinds) and not name.startswith(tuple(inside)):
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
