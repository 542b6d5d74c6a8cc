"""Metrics: feature extractors, FID / KID / IS / precision-recall (torch-fidelity's code),
density / coverage, class coverage, exact mode coverage on 2-D mixtures."""

from ganrun.metrics.modes import mode_metrics

__all__ = ["mode_metrics"]
