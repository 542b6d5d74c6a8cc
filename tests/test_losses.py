"""Each loss against its paper's formula, computed independently with numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ganrun.losses import LOSSES, build_loss

REAL = np.array([2.0, -0.5, 0.3, 1.7], dtype=np.float64)
FAKE = np.array([-1.2, 0.4, -3.0, 0.9], dtype=np.float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def losses(name, **params):
    loss = build_loss(OmegaConf.create({"name": name, **params}))
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    return loss, loss.d_loss(real, fake).item(), loss.g_loss(fake, real).item()


def test_minimax_bce_is_goodfellow_saturating_loss():
    _, d, g = losses("bce")
    # D maximises E log D(x) + E log(1 - D(G(z))); we minimise its negative.
    expected_d = -(np.log(sigmoid(REAL)).mean() + np.log(1 - sigmoid(FAKE)).mean())
    expected_g = np.log(1 - sigmoid(FAKE)).mean()  # G minimises log(1 - D(G(z)))
    assert d == pytest.approx(expected_d, rel=1e-10)
    assert g == pytest.approx(expected_g, rel=1e-10)


def test_nsgan_generator_is_minus_log_d():
    _, d, g = losses("nsgan")
    assert d == pytest.approx(-(np.log(sigmoid(REAL)).mean() + np.log(1 - sigmoid(FAKE)).mean()))
    assert g == pytest.approx(-np.log(sigmoid(FAKE)).mean(), rel=1e-10)


@pytest.mark.parametrize("name", ["wgan", "wgan_gp"])
def test_wasserstein_critic(name):
    _, d, g = losses(name)
    assert d == pytest.approx(FAKE.mean() - REAL.mean(), rel=1e-12)
    assert g == pytest.approx(-FAKE.mean(), rel=1e-12)


@pytest.mark.parametrize("a,b,c", [(0.0, 1.0, 1.0), (-1.0, 1.0, 0.0)])
def test_lsgan_abc_coding(a, b, c):
    _, d, g = losses("lsgan", a=a, b=b, c=c)
    assert d == pytest.approx(0.5 * ((REAL - b) ** 2).mean() + 0.5 * ((FAKE - a) ** 2).mean())
    assert g == pytest.approx(0.5 * ((FAKE - c) ** 2).mean())


def test_hinge():
    _, d, g = losses("hinge")
    assert d == pytest.approx(np.maximum(0, 1 - REAL).mean() + np.maximum(0, 1 + FAKE).mean())
    assert g == pytest.approx(-FAKE.mean())


def test_soft_real_target_is_cross_entropy_with_that_target():
    loss = build_loss(OmegaConf.create({"name": "nsgan"}))
    d = loss.d_loss(torch.tensor(REAL), torch.tensor(FAKE), real_target=0.9).item()
    p = sigmoid(REAL)
    expected = -(0.9 * np.log(p) + 0.1 * np.log(1 - p)).mean() - np.log(1 - sigmoid(FAKE)).mean()
    assert d == pytest.approx(expected, rel=1e-10)


def test_relativistic_average_gan():
    _, d, g = losses("ragan")
    # Jolicoeur-Martineau 2018, RaSGAN: D~(x_r) = sigmoid(C(x_r) - E C(x_f)), etc.
    real_rel, fake_rel = REAL - FAKE.mean(), FAKE - REAL.mean()
    expected_d = -np.log(sigmoid(real_rel)).mean() - np.log(1 - sigmoid(fake_rel)).mean()
    expected_g = -np.log(sigmoid(fake_rel)).mean() - np.log(1 - sigmoid(real_rel)).mean()
    assert d == pytest.approx(expected_d, rel=1e-10)
    assert g == pytest.approx(expected_g, rel=1e-10)


def _mmd2_numpy(x, y, kernel, bandwidths):
    def k(a, b):
        total = 0.0
        for s in bandwidths:
            d2 = ((a - b) ** 2).sum()
            total += np.exp(-d2 / (2 * s * s)) if kernel == "rbf" else (1 + d2 / (2 * s)) ** -s
        return total

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


@pytest.mark.parametrize("kernel,bandwidths", [("rbf", [0.5, 2.0]), ("rq", [0.2, 1.0, 5.0])])
def test_mmd_is_the_unbiased_kernel_two_sample_statistic(kernel, bandwidths):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(loc=0.7, size=(5, 3))
    loss = build_loss(OmegaConf.create({"name": "mmd", "space": "features", "kernel": kernel,
                                        "bandwidths": bandwidths}))
    expected = _mmd2_numpy(x, y, kernel, bandwidths)
    g = loss.g_loss(torch.tensor(y), torch.tensor(x)).item()
    d = loss.d_loss(torch.tensor(x), torch.tensor(y)).item()
    assert g == pytest.approx(expected, rel=1e-9)
    assert d == pytest.approx(-expected, rel=1e-9)


def test_every_shipped_loss_is_tested():
    tested = {"bce", "nsgan", "wgan", "wgan_gp", "lsgan", "hinge", "ragan", "mmd"}
    assert set(LOSSES) == tested
