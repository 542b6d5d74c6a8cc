"""Techniques against GAN failures, one file per technique or small family, each a
registered `Regularizer` (ganrun.regularizers.base) acting through hooks and
declaring traits. Importing the package imports every file in it, in name order,
which registers them: a new technique is one file here and one YAML in
configs/regularizer/."""

from ganrun.registry import import_all
from ganrun.regularizers.base import (
    HOOKS,
    REGULARIZERS,
    Regularizer,
    StepContext,
    build_regularizers,
    remedies,
    samples_per_decision,
    supplies_labels,
)

import_all(__name__)

__all__ = ["HOOKS", "REGULARIZERS", "Regularizer", "StepContext", "build_regularizers", "remedies",
           "samples_per_decision", "supplies_labels"]
