"""Every numeric key of every registered component (dataset, model, loss, optim,
regularizer, logger), of every shipped callback and of the global keys (seed, train,
log, sample, metrics, trainer, fleet) declares its range (ganrun.ranges), and a value
outside it is refused before training in one line naming the key, the value and the
range. The cases are read from the registries and configs/callbacks, so a component,
callback or key added later is covered (and one without a range fails here)."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import get_type_hints

import pytest
import yaml
from hydra.utils import get_class
from omegaconf import OmegaConf

from ganrun.config import schema
from ganrun.config.compose import configs_folder
from ganrun.errors import UserError
from ganrun.loggers import LOGGERS
from ganrun.ranges import Range, check_ranges, nested_schemas, numeric_fields
from ganrun.regularizers import REGULARIZERS

from conftest import compose_cfg

NAMED = {"regularizer": REGULARIZERS, "logger": LOGGERS}  # groups chosen as lists


def components() -> list[tuple[str, str, type]]:
    """(group, option, schema) of every registered component."""
    found = [(group, option, config) for group, options in schema.groups().items()
             for option, config in options.items()]
    return found + [(group, name, config) for group, registry in NAMED.items()
                    for name, config in registry.schemas().items()]


def callbacks() -> list[tuple[str, type]]:
    """(key, settings' schema) of each shipped callback (configs/callbacks/default.yaml)."""
    specs = yaml.safe_load((configs_folder() / "callbacks" / "default.yaml").read_text())
    return [(name, get_class(spec["_target_"]).ranges) for name, spec in specs.items()]


def global_schemas(config: type = schema.RootConfig, prefix: str = "") -> list[tuple[str, type]]:
    """(prefix, schema) of the global keys: the root and every schema nested in it."""
    found = [(prefix, config)]
    for name, sub in nested_schemas(config):
        found += global_schemas(sub, f"{prefix}{name}.")
    return found


def _is_list(config: type, name: str) -> bool:
    return "list[" in str(get_type_hints(config)[name])


def keys() -> list[tuple[str, tuple[str, ...], str, type, Range | None, bool]]:
    """(key's prefix, overrides that select its component, field, int or float, its range,
    whether it is a list of numbers)."""
    found = []
    for group, option, config in components():
        prefix = f"{group}.{option}." if group in NAMED else f"{group}."
        overrides = (f"{group}=[{option}]",) if group in NAMED else (f"{group}={option}",)
        found += [(prefix, overrides, f.name, kind, rng, _is_list(config, f.name))
                  for f, kind, rng in numeric_fields(config)]
    for name, config in callbacks():
        found += [(f"callbacks.{name}.", (), f.name, kind, rng, False)
                  for f, kind, rng in numeric_fields(config)]
    for prefix, config in global_schemas():
        found += [(prefix, (), f.name, kind, rng, _is_list(config, f.name))
                  for f, kind, rng in numeric_fields(config)]
    return found


KEYS = keys()
CASES = [(prefix, overrides, name, value, listed)
         for prefix, overrides, name, kind, rng, listed in KEYS
         if rng is not None for value in rng.outside(kind is int)]


def test_every_numeric_key_declares_its_range():
    undeclared = [f"{prefix}{name}" + (f" ({overrides[0]})" if overrides else "")
                  for prefix, overrides, name, _, rng, _ in KEYS if rng is None]
    assert not undeclared, ("numeric keys without a range (declare one with ganrun.ranges' "
                            f"above / at_least / between / finite): {', '.join(undeclared)}")
    assert len(KEYS) > 100  # the walk found the components
    walked = {prefix.split(".")[0] for prefix, *_ in KEYS}
    assert walked >= {"dataset", "model", "loss", "optim", "regularizer", "logger", "callbacks",
                      "train", "log", "sample", "metrics", "trainer", "fleet", ""}, walked


def test_every_shipped_callback_declares_its_settings():
    """A callback's numeric arguments are its `ranges`' fields (none left unchecked)."""
    import inspect

    for name, config in callbacks():
        cls = get_class(yaml.safe_load((configs_folder() / "callbacks" / "default.yaml")
                                       .read_text())[name]["_target_"])
        numeric = {p.name for p in inspect.signature(cls).parameters.values()
                   if p.annotation in ("int", "float", int, float)}
        assert numeric <= {f.name for f in fields(config)}, (name, numeric)


_composed: dict[tuple[str, ...], object] = {}


def composed(overrides: tuple[str, ...]):
    """The config `ganrun <overrides>` runs (composed once per component), a copy."""
    if overrides not in _composed:
        extra = ("dataset.root=/somewhere",) if overrides == ("dataset=image_folder",) else ()
        _composed[overrides], _ = compose_cfg(*overrides, *extra)
    return _composed[overrides].copy()


@pytest.mark.parametrize("prefix, overrides, name, value, listed", CASES,
                         ids=[f"{p}{n}={v}" for p, _, n, v, _ in CASES])
def test_a_value_outside_its_range_is_one_line(prefix, overrides, name, value, listed):
    cfg = composed(overrides)
    key = f"{prefix}{name}"
    if listed:  # a list of numbers: each element is checked
        current = OmegaConf.select(cfg, key) or [value]
        OmegaConf.update(cfg, key, [value, *list(current)[1:]])
        key += "[0]"
    else:
        OmegaConf.update(cfg, key, value)
    shown = str(value) if isinstance(value, int) else f"{value:g}"
    with pytest.raises(UserError) as caught:
        schema.validate(cfg)
    message = str(caught.value)
    assert message.startswith(f"{key}={shown}: must be "), message
    assert "\n" not in message


def test_the_shipped_defaults_are_within_their_ranges():
    for group, option, config in components():
        overrides = (f"{group}=[{option}]",) if group in NAMED else (f"{group}={option}",)
        cfg = composed(overrides)
        node = cfg[group][option] if group in NAMED else cfg[group]
        check_ranges(config, node, prefix=f"{group}.")
    check_ranges(schema.RootConfig, composed(()))


def test_the_messages_name_the_range():
    assert Range(1).describe(integer=True) == "an integer >= 1"
    assert Range(0, low_open=True).describe(integer=False) == "finite and > 0"
    assert Range(0, 1, high_open=True).describe(integer=False) == "finite and in [0, 1)"
    assert Range(0, 1, low_open=True).describe(integer=False) == "finite and in (0, 1]"
    assert Range().describe(integer=False) == "finite"
    assert Range(0, 2**32 - 1).describe(integer=True) == "an integer in [0, 4294967295]"
    assert Range(0, infinite=True).describe(integer=False) == ">= 0"
    assert Range(0, infinite=True).contains(math.inf) and not Range(0).contains(math.inf)
    assert not Range().contains(math.nan) and not Range(0, infinite=True).contains(math.nan)
