"""The `logger=` group: where a run's scalars, pictures and hyperparameters go
(TensorBoard, CSV, MLflow, Weights & Biases), one file per logger, each a registered
`Sink` (ganrun.loggers.base). The callbacks hand what they log to `scalars`, `picture`
and `hparams`, and never name a logger. Importing the package imports every file in
it, in name order, which registers them; a logger's own package (mlflow, wandb) is
imported only when a run uses it."""

from ganrun.loggers.base import (
    LOGGERS,
    Sink,
    Where,
    finish,
    hparams,
    make_sinks,
    picture,
    scalars,
    sinks_of,
)
from ganrun.registry import import_all

import_all(__name__, skip=("base",))

__all__ = ["LOGGERS", "Sink", "Where", "finish", "hparams", "make_sinks", "picture", "scalars",
           "sinks_of"]
