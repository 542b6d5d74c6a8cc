"""Callbacks that need another: checked when a config is validated."""

from __future__ import annotations

from typing import Any

import yaml

from ganrun.config.compose import configs_folder
from ganrun.errors import UserError


def check_needs(node: Any) -> None:
    """Refuse, in one line naming both, a configuration that removes a callback another
    one needs (a callback class's `needs`, ganrun.callbacks.base.SideJob):
    `~callbacks.step_stats` with the health monitor on would otherwise leave the
    monitor without its statistics. The classes are found by their `_target_`, as
    Hydra makes them: the config layer imports no callback."""
    from hydra.utils import get_class

    classes = {}
    for name, spec in (node or {}).items():
        if spec is not None and "_target_" in spec:
            try:
                classes[name] = get_class(spec["_target_"])
            except Exception:  # build_callbacks says what is wrong with it
                continue
    for name, cls in classes.items():
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
