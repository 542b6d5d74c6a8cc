"""A config node merged into its schema: keys and types checked, values converted, and
OmegaConf's exceptions turned into one line naming the key (`optim.lrr: unknown key for
optim=adam; valid keys: ...`, `optim.lr_d: Value 'abc' ... (expected float)`)."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from ganrun.config.compose import HIDDEN_KEYS
from ganrun.errors import UserError


def merge(schema: type, node: Any, prefix: str, option: str | None = None,
          groups_at: type | None = None) -> DictConfig:
    """`node` merged into `schema`; `option` names what chose the schema (`optim=adam`),
    and an unknown key at `groups_at` lists the config groups too (the top level)."""
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), node)
    except ConfigKeyError as e:
        parent = _schema_at(schema, str(e.full_key).split(".")[:-1])
        valid = ", ".join(f.name for f in fields(parent)
                          if f.name != "name" and f.name not in HIDDEN_KEYS)
        if parent is groups_at:  # the groups are set at the top level too
            from ganrun.config.compose import config_groups

            valid += f"; config groups: {', '.join(config_groups())}"
        where = f" for {option}" if option else ""
        valid = f"valid keys: {valid}" if valid else "it has no keys of its own"
        raise UserError(f"{prefix}{e.full_key}: unknown key{where}; {valid}") from None
    except ValidationError as e:
        raise UserError(f"{prefix}{e.full_key}: {_short(e)}{_type_name(schema, e.full_key)}"
                        ) from None
    except OmegaConfBaseException as e:
        raise UserError(f"{prefix}{e.full_key}: {_short(e)}") from None


def _schema_at(schema: type, path: list[str]) -> type:
    """The dataclass that holds the key at `path` below `schema` (as deep as known)."""
    for part in path:
        kind = get_type_hints(schema).get(part.split("[")[0])
        if not (isinstance(kind, type) and is_dataclass(kind)):
            break
        schema = kind
    return schema


def _type_name(schema: type, full_key: str) -> str:
    """" (expected int)" for the key at `full_key` (a dotted path below `schema`)."""
    path = str(full_key).split(".")
    kind = get_type_hints(_schema_at(schema, path[:-1])).get(path[-1].split("[")[0])
    if kind is None:
        return ""
    return f" (expected {getattr(kind, '__name__', str(kind).replace('typing.', ''))})"


def _short(e: OmegaConfBaseException) -> str:
    return str(e).splitlines()[0]
