"""Metrics: feature extractors, FID / KID / IS / precision-recall (torch-fidelity's code),
density / coverage, class coverage, exact mode coverage on 2-D mixtures, PPL.

Each metric is one registered class in one file (ganrun.metrics.registry). Importing
the package files the shipped ones in the order below (the order `valid:` lists them
in and the guards name them in), then imports every other file here: a new metric is
one file in this folder, and its name in metrics.names."""

from ganrun.metrics import (  # noqa: F401,I001  (the order metrics.names' valid list shows)
    fid,
    kid,
    inception_score,
    precision_recall,
    density_coverage,
    class_coverage,
    modes,
    path_length,
)
from ganrun.metrics.modes import mode_metrics
from ganrun.metrics.registry import METRICS, Metric, Samples
from ganrun.registry import import_all

# Every other file is a metric of its own (a user's); the machinery around them is
# imported where it is used, not here: ganrun-report reads the declarations without torch.
import_all(__name__, skip=("engine", "evaluator", "extractors", "guards", "ppl", "state"))

__all__ = ["METRICS", "Metric", "Samples", "mode_metrics"]
