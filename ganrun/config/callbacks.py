"""The callbacks' settings, checked when a config is validated (before anything is
written or built): each setting within its range, and no callback removed that
another one needs. The classes are found by their `_target_`, as Hydra makes them:
the config layer names no callback."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import yaml

from ganrun.config.compose import configs_folder
from ganrun.config.merge import merge
from ganrun.errors import UserError
from ganrun.ranges import check_ranges


def check_callbacks(node: Any) -> None:
    from hydra.utils import get_class

    classes = {}
    for name, spec in (node or {}).items():
        if spec is not None and "_target_" in spec:
            try:
                classes[name] = get_class(spec["_target_"])
            except Exception:  # build_callbacks says what is wrong with it
                continue
    for name, cls in classes.items():
        _check_settings(name, cls, node[name])
    for name, cls in classes.items():
        _check_needs(name, cls, classes)


def _check_settings(name: str, cls: type, spec: Any) -> None:
    """A callback class's `ranges` (a schema of its settings, ganrun.callbacks.base.SideJob):
    `callbacks.health.delta=-1` is refused here, naming the key, as any group's key is."""
    ranges = getattr(cls, "ranges", None)
    if ranges is None:
        return
    given = {f.name: spec[f.name] for f in fields(ranges) if f.name in spec}
    prefix = f"callbacks.{name}."
    merged = merge(ranges, given, prefix=prefix)
    check_ranges(ranges, {k: merged[k] for k in given}, prefix=prefix)


def _check_needs(name: str, cls: type, classes: dict[str, type]) -> None:
    """Refuse, in one line naming both, a configuration that removes a callback another
    one needs (a callback class's `needs`): `~callbacks.step_stats` with the health
    monitor on would otherwise leave the monitor without its statistics."""
    for need in getattr(cls, "needs", ()):
        if not any(issubclass(other, need) for other in classes.values()):
            key = _default_key(need)
            where = f"callbacks.{key} ({need.__name__})" if key else need.__name__
            raise UserError(f"callbacks.{name} ({cls.__name__}) needs {where}, which this "
                            f"configuration removes: keep it, or remove callbacks.{name} "
                            f"too (~callbacks.{name})")


def _default_key(kind: type) -> str | None:
    """The key of callback class `kind` in configs/callbacks/default.yaml, if it is there."""
    defaults = yaml.safe_load((configs_folder() / "callbacks" / "default.yaml").read_text())
    target = f"{kind.__module__}.{kind.__qualname__}"
    return next((k for k, spec in defaults.items() if (spec or {}).get("_target_") == target), None)
