"""Stacked digits (issue 22, in progress): the 1000-mode set built from scikit-learn's
digits, and the stacked mode count (modes held, KL from uniform) checked against an
independent numpy / scipy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from ganrun.config.schema import validate
from ganrun.data import load_dataset
from ganrun.metrics.stacked import stacked_modes

from conftest import compose_cfg


def test_stacked_digits_puts_three_independent_digits_in_the_channels():
    from sklearn.datasets import load_digits

    cfg = validate(compose_cfg("dataset=stacked_digits", "dataset.image_size=8",
                               "dataset.n_samples=5000")[0])
    data = load_dataset(cfg.dataset)
    assert tuple(data.data.shape) == (5000, 3, 8, 8) and data.num_classes == 1000
    digits = load_digits()
    base = torch.tensor(digits.images, dtype=torch.float32) / 16.0 * 2 - 1  # 8x8: no resize
    for i in range(20):  # each channel is one of the digits, of the class its label says
        for c, cls in enumerate((int(data.labels[i]) // 100, int(data.labels[i]) // 10 % 10,
                                 int(data.labels[i]) % 10)):
            matches = (base - data.data[i, c]).abs().flatten(1).amax(1) < 1e-6
            assert matches.any() and set(digits.target[matches.numpy()]) == {cls}
    # independent channels: every mode held, each about 1/1000 of the samples
    counts = np.bincount(data.labels.numpy(), minlength=1000)
    assert (counts > 0).sum() >= 990 and counts.max() < 25
    again = load_dataset(cfg.dataset)  # the same set in every run
    assert torch.equal(again.data, data.data)


@pytest.mark.parametrize("kind", ["uniform", "collapsed", "ten_modes"])
def test_the_stacked_mode_count_matches_numpy(kind):
    rng = np.random.default_rng(0)
    if kind == "uniform":
        classes = rng.integers(0, 10, size=(26000, 3))
    elif kind == "collapsed":
        classes = np.tile([[3, 1, 4]], (500, 1))
    else:
        classes = np.repeat(rng.integers(0, 10, size=(10, 3)), 50, axis=0)
    got = stacked_modes(torch.tensor(classes))
    modes = classes[:, 0] * 100 + classes[:, 1] * 10 + classes[:, 2]
    counts = np.bincount(modes, minlength=1000)
    assert got["modes"] == (counts > 0).sum()
    assert got["kl"] == pytest.approx(entropy(counts / counts.sum(), np.full(1000, 1e-3)),
                                      rel=1e-9, abs=1e-12)
    if kind == "collapsed":
        assert got["modes"] == 1 and got["kl"] == pytest.approx(np.log(1000))
