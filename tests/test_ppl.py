"""Perceptual path length: closed forms, torchmetrics' reference, the run's record,
and the LPIPS and offline distances."""

from __future__ import annotations

import json
import math
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ganrun.errors import UserError
from ganrun.metrics.ppl import (
    VGG16_FILE,
    FeatureDistance,
    interpolate,
    path_lengths,
    perceptual_path_length,
    trimmed_mean,
)

from conftest import GANRUN, cli_env, compose_cfg
from tbread import scalars


def squared(a, b):
    return (a - b).pow(2).flatten(1).sum(dim=1)


def stand_in(generator: nn.Module, latent_dim: int, latent: str):
    """What perceptual_path_length reads of a GANModule, around any generator."""
    return SimpleNamespace(latent_dim=latent_dim, device=torch.device("cpu"), unit_range=False,
                           cfg=SimpleNamespace(sample=SimpleNamespace(latent=latent,
                                                                      truncation=None)),
                           sampler=generator, sample_labels=lambda n: None)


class Linear(nn.Module):
    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = a

    def forward(self, z, labels=None):
        return z @ self.a.T


@pytest.mark.parametrize("t", ["end", "full"])
def test_lerp_path_length_of_a_linear_generator_is_the_squared_image_of_the_step(t):
    # G(z) = A z, d = squared distance: along a line, d(G(z_t), G(z_t+eps)) / eps^2 is
    # |A (z2 - z1)|^2 at every t, exactly.
    g = torch.Generator().manual_seed(0)
    a = torch.randn(5, 8, generator=g, dtype=torch.float64)
    z1, z2 = torch.rand(300, 8, generator=g, dtype=torch.float64), torch.rand(
        300, 8, generator=g, dtype=torch.float64)
    at = torch.rand(300, 1, generator=g, dtype=torch.float64) if t == "full" else torch.zeros(300, 1)
    got = path_lengths(Linear(a), z1, z2, at.double(), 1e-4, "lerp", squared)
    expected = ((z2 - z1) @ a.T).pow(2).sum(dim=1)
    assert torch.allclose(got, expected, rtol=1e-6)


def test_slerp_path_length_is_the_chord_of_the_arc():
    # Endpoints of equal length r at angle theta: slerp moves along the circle of radius
    # r, so a step eps apart is a chord of 2 r sin(eps theta / 2) wherever t is; through
    # G = c I the distance is c^2 times its square.
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(200, 16, generator=g, dtype=torch.float64)
    z2 = torch.randn(200, 16, generator=g, dtype=torch.float64)
    r = torch.rand(200, 1, generator=g, dtype=torch.float64) * 3 + 1
    z1, z2 = r * z1 / z1.norm(dim=1, keepdim=True), r * z2 / z2.norm(dim=1, keepdim=True)
    theta = torch.acos((z1 * z2).sum(1) / r.squeeze(1) ** 2)
    eps, c = 1e-4, 2.5
    t = torch.rand(200, 1, generator=g, dtype=torch.float64)
    got = path_lengths(Linear(c * torch.eye(16, dtype=torch.float64)), z1, z2, t, eps, "slerp",
                       squared)
    chord = 2 * r.squeeze(1) * torch.sin(eps * theta / 2)
    assert torch.allclose(got, c**2 * chord**2 / eps**2, rtol=1e-6)
    assert torch.allclose(got, (c * r.squeeze(1) * theta) ** 2, rtol=1e-6)  # ~ (c r theta)^2
    # the arc's ends are the endpoints
    assert torch.allclose(interpolate(z1, z2, torch.ones(200, 1, dtype=torch.float64), "slerp"), z2)


def test_trimmed_mean_drops_below_the_1st_and_above_the_99th_percentile():
    values = np.random.default_rng(0).lognormal(size=1000)
    lo, hi = np.percentile(values, 1, method="lower"), np.percentile(values, 99, method="lower")
    kept = values[(values >= lo) & (values <= hi)]
    assert len(kept) == 981  # 9 below, 10 above (990th of 1000 kept)
    assert trimmed_mean(torch.tensor(values)) == pytest.approx(kept.mean(), rel=1e-12)


def test_end_sampling_equals_torchmetrics_perceptual_path_length():
    from torchmetrics.functional.image.perceptual_path_length import (
        perceptual_path_length as reference,
    )

    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(6, 48), nn.Tanh(), nn.Linear(48, 3 * 4 * 4), nn.Tanh())

    class G(nn.Module):  # torchmetrics' generator: sample() and images in [0, 255]
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, z, labels=None):
            return self.net(z).view(-1, 3, 4, 4)

        def sample(self, n):
            return torch.randn(n, 6)

    class Scaled(G):
        def forward(self, z):
            return (super().forward(z) + 1) * 127.5

    torch.manual_seed(11)
    theirs, _, _ = reference(Scaled(), num_samples=400, batch_size=400,
                             interpolation_method="slerp_any", sim_net=FeatureDistance(nn.Flatten()))
    torch.manual_seed(11)  # the same latent pairs: z1 of all pairs, then z2
    ours = perceptual_path_length(stand_in(G(), 6, "normal"), FeatureDistance(nn.Flatten()), 400,
                                  1e-4, "end", batch_size=400)
    assert ours == pytest.approx(theirs.item(), rel=2e-3)  # their [0, 255] round trip in float32


def test_a_run_logs_ppl_and_records_its_protocol(train_fast):
    from ganrun.callbacks.metrics import PPL_STREAM, evaluation_seed
    from ganrun.cli.tools import load_module
    from ganrun.data import load_dataset
    from ganrun.metrics.evaluator import Evaluator

    result, run_dir = train_fast("dataset=ring8", "metrics=default", "metrics.names=[modes,ppl]",
                                 "metrics.every=2", "metrics.n_fake=200",
                                 "metrics.ppl_samples=300", "metrics.ppl_sampling=full")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [2, 4]
    assert records[-1]["ppl"] == {"net": "raw", "samples": 300, "epsilon": 1e-4,
                                  "sampling": "full", "trimmed": [0.01, 0.99]}
    logged = scalars(run_dir / "tb")["metrics/ppl"]
    assert [v for _, v in logged] == pytest.approx([r["metrics"]["ppl"] for r in records])
    # The last value again from the checkpoint's generator, on the same latent pairs.
    module, cfg = load_module(run_dir / "checkpoints" / "last.ckpt")
    evaluator = Evaluator(cfg.metrics, load_dataset(cfg.dataset), cfg.dataset)
    torch.manual_seed(evaluation_seed(cfg.seed, 4) + PPL_STREAM)
    assert evaluator.path_length(module) == pytest.approx(records[-1]["metrics"]["ppl"], rel=1e-9)


def test_ppl_offline_uses_the_runs_extractor_and_lpips_needs_vgg16(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    from ganrun.data import load_dataset
    from ganrun.metrics.evaluator import Evaluator

    cfg, _ = compose_cfg("metrics.names=[fid,ppl]")
    dataset = load_dataset(cfg.dataset)
    evaluator = Evaluator(cfg.metrics, dataset, cfg.dataset)
    assert evaluator.ppl_net == evaluator.extractor_id and evaluator.ppl_net.startswith("digits-")
    images = torch.rand(3, 1, 16, 16) * 2 - 1
    features = evaluator.extractor.net(images)[0]  # the classifier's penultimate layer
    expected = (features - evaluator.extractor.net(images.flip(0))[0]).pow(2).sum(1)
    assert torch.allclose(evaluator.ppl_distance(images, images.flip(0)), expected)
    cfg.metrics.ppl_net = "lpips"
    with pytest.raises(UserError, match=f"metrics.ppl_net=lpips needs VGG16's ImageNet weights: "
                                        f"put {VGG16_FILE} in torch hub's cache .*; offline "
                                        "without them: metrics.ppl_net=extractor"):
        Evaluator(cfg.metrics, dataset, cfg.dataset)
    cfg.metrics.lpips_weights = str(tmp_path / "nope.pth")
    with pytest.raises(UserError, match="metrics.lpips_weights=.*nope.pth: no such file"):
        Evaluator(cfg.metrics, dataset, cfg.dataset)


def test_lpips_from_a_given_weights_file_is_torchmetrics_lpips(tmp_path, monkeypatch):
    # Real VGG16 weights cannot be downloaded here: a file of the same format (random
    # values) stands in, given by path; the distance must be torchmetrics' LPIPS with it.
    import torchvision
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    from ganrun.metrics.ppl import load_lpips, resolve_ppl_net

    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    torch.manual_seed(0)
    weights = tmp_path / "given" / "vgg.pth"
    weights.parent.mkdir()
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), weights)
    distance = load_lpips(str(weights))
    assert torch.hub.get_dir() == str(tmp_path / "hub")  # put back
    a, b = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / VGG16_FILE).symlink_to(weights)
    assert resolve_ppl_net("auto", None) == "lpips"  # in the cache now: auto takes it
    reference = LearnedPerceptualImagePatchSimilarity(net_type="vgg", reduction="sum")
    expected = torch.stack([reference(a[i:i + 1], b[i:i + 1]) for i in range(4)])
    assert torch.allclose(distance(a, b), expected, rtol=1e-5)
    grey = distance(a[:, :1], b[:, :1])  # grey images repeated to three channels
    assert torch.allclose(grey, distance(a[:, :1].expand(-1, 3, -1, -1),
                                         b[:, :1].expand(-1, 3, -1, -1)))
    assert math.isfinite(distance(a[:, :, :32, :32], b[:, :, :32, :32]).sum().item())


def test_ppl_settings_are_checked_before_training():
    for override, message in (("metrics.ppl_sampling=middle",
                               "metrics.ppl_sampling: 'middle' is not supported; valid: end, full"),
                              ("metrics.ppl_samples=50",
                               "metrics.ppl_samples=50: ppl needs at least 100 latent pairs")):
        proc = subprocess.run([GANRUN, "metrics.names=[fid,ppl]", override], capture_output=True,
                              text=True, env=cli_env())
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith(f"ganrun: error: {message}")
