"""The range of every numeric key, declared on its schema's field and checked in one walk.

A numeric field of a config schema (a component's `Config`, the global keys in
ganrun.config.schema) states the values it takes instead of a bare MISSING:

    @dataclass
    class Config:
        n_power_iterations: int = at_least(1)     # an integer >= 1
        decay: float = between(0, 1)              # in [0, 1]
        lr_g: float = above(0)                    # > 0
        a: float = finite()                       # any number but nan and inf

Floats must also be finite (nan and inf are refused) unless the range says
`infinite=True`; a list of numbers has each element checked; None passes where
the type allows it. `check_ranges` refuses the first value outside its range
with one line naming the key, the value and the range:

    regularizer.spectral_norm.n_power_iterations=0: must be an integer >= 1
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import Field, dataclass, field, fields, is_dataclass
from typing import Any, get_type_hints

from omegaconf import MISSING, ListConfig

from ganrun.errors import UserError


@dataclass(frozen=True)
class Range:
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False
    infinite: bool = False  # inf (and -inf) mean something for this key

    def contains(self, value: float) -> bool:
        if math.isnan(value) or (math.isinf(value) and not self.infinite):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self, integer: bool) -> str:
        """"an integer >= 1", "in [0, 1)", "finite and > 0", ..."""
        if self.low is not None and self.high is not None:
            bounds = (f"in {'(' if self.low_open else '['}{_num(self.low)}, "
                      f"{_num(self.high)}{')' if self.high_open else ']'}")
        elif self.low is not None:
            bounds = f"{'>' if self.low_open else '>='} {_num(self.low)}"
        elif self.high is not None:
            bounds = f"{'<' if self.high_open else '<='} {_num(self.high)}"
        else:
            bounds = ""
        if integer:
            return f"an integer {bounds}".rstrip()
        if self.infinite:
            return bounds or "a number"
        return f"finite and {bounds}" if bounds else "finite"

    def outside(self, integer: bool) -> list[float]:
        """Values this range refuses (for tests): just past each bound, nan and inf."""
        step = 1 if integer else 0.5
        values = []
        if self.low is not None:
            values.append(self.low if self.low_open else self.low - step)
        if self.high is not None:
            values.append(self.high if self.high_open else self.high + step)
        if not integer:
            values.append(math.nan)
            if not self.infinite:
                values.append(math.inf)
        return [int(v) if integer else float(v) for v in values]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"  # 4294967295, not 4.29497e+09


def _ranged(rng: Range) -> Any:
    return field(default=MISSING, metadata={"range": rng})


def above(low: float) -> Any:
    """> low."""
    return _ranged(Range(low, low_open=True))


def at_least(low: float, infinite: bool = False) -> Any:
    """>= low."""
    return _ranged(Range(low, infinite=infinite))


def between(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Any:
    """In [low, high], an end excluded with low_open / high_open."""
    return _ranged(Range(low, high, low_open, high_open))


def finite() -> Any:
    """Any number but nan and inf."""
    return _ranged(Range())


NUMBERS = (int, float)
SEED_LIMIT = 2**32  # seeds in [0, 2**32), as Lightning's seed_everything takes them


def numeric_kind(hint: Any) -> type | None:
    """int or float for a numeric field's type (`int`, `float | None`, `list[float]`, ...);
    None for any other (bool, str, nested schemas)."""
    if hint in NUMBERS:
        return hint
    args = typing.get_args(hint)
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        kinds = {numeric_kind(a) for a in args if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else None
    if typing.get_origin(hint) in (list, tuple) and args:
        return numeric_kind(args[0])
    return None


def numeric_fields(schema: type) -> list[tuple[Field, type, Range | None]]:
    """Each numeric field of a schema: (field, int or float, its declared range or None)."""
    hints = get_type_hints(schema)
    return [(f, kind, f.metadata.get("range")) for f in fields(schema)
            if (kind := numeric_kind(hints[f.name])) is not None]


def nested_schemas(schema: type) -> list[tuple[str, type]]:
    """(name, schema) of the fields that are schemas themselves (RootConfig's train, ...)."""
    hints = get_type_hints(schema)
    return [(f.name, hints[f.name]) for f in fields(schema)
            if isinstance(hints[f.name], type) and is_dataclass(hints[f.name])]


def check_ranges(schema: type, node: Any, prefix: str = "") -> None:
    """Refuse the first value of `node` outside the range its field in `schema` declares
    (nested schemas too): one UserError naming the key, the value and the range."""
    for f, kind, rng in numeric_fields(schema):
        value = node.get(f.name)
        if rng is None or value is None:
            continue
        items = (enumerate(value) if isinstance(value, list | tuple | ListConfig)
                 else [(None, value)])
        for i, item in items:
            if item is not None and not rng.contains(item):
                key = prefix + f.name + ("" if i is None else f"[{i}]")
                raise UserError(f"{key}={_show(item)}: must be {rng.describe(kind is int)}")
    for name, sub in nested_schemas(schema):
        if name in node and node[name] is not None:
            check_ranges(sub, node[name], prefix=f"{prefix}{name}.")


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"

