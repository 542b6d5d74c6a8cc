"""Lightning callbacks, one side job each: the divergence guard, the step-statistics
logger, sample grids, metrics and checkpoints (and the signal handler `ganrun.training.run`
adds). `build_callbacks` makes them from the `callbacks` config group."""

from __future__ import annotations

from typing import Any

from ganrun.errors import UserError


def build_callbacks(node: Any) -> list:
    """One callback per key of `callbacks` (Hydra `_target_` + arguments), the
    divergence guard first and checkpoints last, the others in config order."""
    import pytorch_lightning as pl
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    callbacks = []
    for name, spec in (node or {}).items():
        if spec is None:
            continue
        if "_target_" not in spec:
            raise UserError(f"callbacks.{name}: no _target_ (the class to make, e.g. "
                            f"callbacks.{name}._target_=my.module.MyCallback)")
        try:
            callback = instantiate(spec)
        except InstantiationException as e:
            cause = e.__cause__
            if isinstance(cause, UserError):
                raise UserError(f"callbacks.{name}: {cause}") from None
            reason = str(cause or e).splitlines()[0]
            raise UserError(f"callbacks.{name}: cannot make {spec['_target_']}: {reason}") from None
        if not isinstance(callback, pl.Callback):
            raise UserError(f"callbacks.{name}: {spec['_target_']} is not a Lightning Callback")
        callbacks.append(callback)
    return sorted(callbacks, key=lambda c: getattr(c, "order", 0))
