"""One registry per kind of component (loss, regularizer, optimizer).

A component is a class with a `name`, its config schema as a nested dataclass
`Config` (no defaults: the YAML holds them; every numeric field declares its range,
ganrun.ranges) and, where it has rules beyond types and ranges, a
`check(params, cfg)` that raises `UserError`. A decorator files it, so adding a
technique is one Python class and one YAML:

    @REGULARIZERS.register
    class MyPenalty(Regularizer):
        name = "my_penalty"

        @dataclass
        class Config:
            weight: float = at_least(0)
            enabled_after: int = at_least(0)
"""

from __future__ import annotations


class Registry(dict):
    """name -> class, for one kind of component."""

    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def register(self, cls: type) -> type:
        if cls.name in self:
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice")
        self[cls.name] = cls
        return cls

    def schemas(self) -> dict[str, type]:
        return {name: cls.Config for name, cls in self.items()}


def import_all(package: str, skip: tuple[str, ...] = ()) -> None:
    """Import every module of `package` but those in `skip`, in name order: each file
    registers what it defines, so a new file in the folder needs no line anywhere else."""
    import importlib
    import pkgutil

    folder = importlib.import_module(package).__path__
    for info in sorted(pkgutil.iter_modules(folder), key=lambda m: m.name):
        if info.name not in skip:
            importlib.import_module(f"{package}.{info.name}")
