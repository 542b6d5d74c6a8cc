"""Penalties, constraints and tricks checked against their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from ganrun.regularizers import REGULARIZERS, StepContext, build_regularizers
from ganrun.regularizers.constraints import Dropout, SpectralNorm, WeightClip
from ganrun.regularizers.ema import EMA
from ganrun.regularizers.generator import Diversity as DiversityPenalty
from ganrun.regularizers.generator import FeatureMatching
from ganrun.regularizers.heads import (
    MinibatchDiscrimination,
    MinibatchDiscriminationLayer,
    MinibatchStdDev,
    MinibatchStdDevLayer,
)
from ganrun.regularizers.inputs import ExperienceReplay, InstanceNoise, LabelNoise, LabelSmoothing
from ganrun.regularizers.penalties import (
    DRAGANPenalty,
    GradientPenalty,
    HistoricalAveraging,
    R1Penalty,
)


class LinearCritic(nn.Module):
    """D(x) = w . x + b: grad_x D = w for every x, so ||grad|| = ||w||."""

    def __init__(self, w):
        super().__init__()
        self.lin = nn.Linear(w.numel(), 1)
        with torch.no_grad():
            self.lin.weight.copy_(w.view(1, -1))

    def forward(self, x, labels=None):
        return self.lin(x.flatten(1)).squeeze(1)


def _ctx(D, real, fake, **kw):
    return StepContext(real, fake, D(real), D(fake), D, **kw)


W = torch.tensor([3.0, 4.0])  # ||w|| = 5


@pytest.mark.parametrize("penalty,expected", [
    (GradientPenalty(weight=10.0), 10.0 * (5.0 - 1.0) ** 2),
    (DRAGANPenalty(weight=10.0, c=0.5), 10.0 * (5.0 - 1.0) ** 2),
    (R1Penalty(gamma=10.0), 0.5 * 10.0 * 5.0 ** 2),
])
def test_gradient_penalties_equal_the_closed_form_for_a_linear_critic(penalty, expected):
    D = LinearCritic(W)
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    value = penalty.d_penalty(_ctx(D, real, fake))
    assert value.item() == pytest.approx(expected, rel=1e-5)
    value.backward()  # double backward reaches D's weight
    grad = D.lin.weight.grad.view(-1)
    if isinstance(penalty, R1Penalty):  # d/dw gamma/2 ||w||^2 = gamma w
        assert torch.allclose(grad, 10.0 * W, atol=1e-4)
    else:  # d/dw lambda (||w|| - 1)^2 = 2 lambda (||w|| - 1) w / ||w||
        assert torch.allclose(grad, 10 * 2 * (5.0 - 1.0) * W / 5.0, atol=1e-4)


def test_one_sided_gradient_penalty_ignores_norms_below_one():
    D = LinearCritic(torch.tensor([0.3, 0.4]))  # ||w|| = 0.5
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert GradientPenalty(10.0, one_sided=True).d_penalty(_ctx(D, real, fake)).item() == 0.0
    assert GradientPenalty(10.0).d_penalty(_ctx(D, real, fake)).item() == pytest.approx(2.5)


def test_lazy_r1_applies_every_nth_step_with_its_weight_scaled():
    D = LinearCritic(W)
    r1 = R1Penalty(gamma=2.0, every=4)
    values = [r1.d_penalty(_ctx(D, torch.randn(4, 2), torch.randn(4, 2))).item() for _ in range(8)]
    expected = 0.5 * 2.0 * 4 * 25.0
    assert values == pytest.approx([expected, 0, 0, 0, expected, 0, 0, 0])


def test_weight_clip_bounds_every_parameter():
    D = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        for p in D.parameters():
            p.normal_(0, 1.0)
    clip = WeightClip(0.01)
    clip.wrap(nn.Identity(), D)
    clip.after_d_step(D)
    for p in D.parameters():
        assert p.abs().max().item() <= 0.01
    assert any((p.abs() == 0.01).any() for p in D.parameters())


def test_spectral_norm_makes_largest_singular_value_one():
    torch.manual_seed(0)
    D = nn.Sequential(nn.Linear(6, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    G = nn.Sequential(nn.Linear(3, 6))
    SpectralNorm(n_power_iterations=1).wrap(G, D)
    for _ in range(30):  # power iteration converges as D is used in training mode
        D(torch.randn(4, 6))
    D.eval()
    for layer in (D[0], D[2]):
        sigma = torch.linalg.svdvals(layer.weight.detach()).max().item()
        assert abs(sigma - 1.0) < 1e-3
    assert not hasattr(G[0], "parametrizations")  # G untouched unless generator=true
    SpectralNorm(generator=True).wrap(G, nn.Sequential())
    assert hasattr(G[0], "parametrizations")


def test_label_smoothing_changes_only_the_real_target():
    out = torch.zeros(4)
    assert LabelSmoothing(0.9).targets(1.0, 0.0, out, out) == (0.9, 0.0)


def test_label_noise_flips_about_the_given_fraction_of_targets():
    torch.manual_seed(0)
    real_out, fake_out = torch.zeros(20000), torch.zeros(20000)
    rt, ft = LabelNoise(0.1).targets(1.0, 0.0, real_out, fake_out)
    assert set(rt.unique().tolist()) == {0.0, 1.0} and set(ft.unique().tolist()) == {0.0, 1.0}
    assert abs((rt == 0).float().mean().item() - 0.1) < 0.01
    assert abs((ft == 1).float().mean().item() - 0.1) < 0.01


def test_instance_noise_is_annealed_linearly_to_zero():
    noise = InstanceNoise(std=0.2, anneal_steps=100)
    assert [noise.current_std(s) for s in (0, 50, 100, 150)] == pytest.approx([0.2, 0.1, 0, 0])
    torch.manual_seed(0)
    x = torch.zeros(50000)
    assert noise.d_inputs(x, 50).std().item() == pytest.approx(0.1, rel=0.02)
    assert torch.equal(noise.d_inputs(x, 100), x)
    assert InstanceNoise(std=0.2, anneal_steps=None, total_steps=40).anneal_steps == 40


def test_feature_matching_is_squared_distance_of_mean_features():
    real_feat, fake_feat = torch.randn(6, 5), torch.randn(6, 5, requires_grad=True)
    ctx = StepContext(None, None, None, None, None, real_feat=real_feat, fake_feat=fake_feat)
    value = FeatureMatching(weight=2.0).g_penalty(ctx)
    expected = 2.0 * ((real_feat.numpy().mean(0) - fake_feat.detach().numpy().mean(0)) ** 2).sum()
    assert value.item() == pytest.approx(expected, rel=1e-6)
    value.backward()
    assert fake_feat.grad is not None


def test_minibatch_discrimination_tells_identical_from_diverse_batches():
    torch.manual_seed(0)
    layer = MinibatchDiscrimination(in_features=5, kernels=3, kernel_dim=4)
    same = layer(torch.randn(1, 5).repeat(8, 1))
    diverse = layer(torch.randn(8, 5) * 3)
    assert same.shape == diverse.shape == (8, 8)
    # o_b = sum_{j != i} exp(-||M_i - M_j||_1): 7 for identical samples, far less for diverse.
    assert torch.allclose(same[:, 5:], torch.full((8, 3), 7.0))
    assert diverse[:, 5:].max() < 3.5
    f = torch.randn(4, 5)
    m = (f @ layer.T).view(4, 3, 4).detach().numpy()
    o = np.array([[sum(np.exp(-np.abs(m[i, b] - m[j, b]).sum()) for j in range(4) if j != i)
                   for b in range(3)] for i in range(4)])
    assert np.allclose(layer(f)[:, 5:].detach().numpy(), o, atol=1e-6)


def test_minibatch_stddev_appends_the_mean_group_std():
    f = torch.randn(8, 3)
    out = MinibatchStdDev(group_size=4)(f)
    assert out.shape == (8, 4) and torch.equal(out[:, :3], f)
    groups = f.view(4, 2, 3).numpy()  # row i belongs with rows i % 2 (as ProGAN's view)
    expected = np.sqrt(groups.var(axis=0) + 1e-8).mean(axis=1)
    assert np.allclose(out[:, 3].numpy(), np.tile(expected, 4), atol=1e-6)


class TinyD(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(2, 6), nn.LeakyReLU(0.2))
        self.head = nn.Linear(6, 1)
        self.feature_dim = 6

    def features(self, x):
        return self.body(x)

    def forward(self, x, labels=None):
        return self.head(self.features(x)).squeeze(1)


def test_head_layers_compose_and_spectral_norm_reaches_them():
    D = TinyD()
    for reg in build_regularizers(OmegaConf.create({
            "spectral_norm": {"n_power_iterations": 1, "generator": False},
            "minibatch_discrimination": {"kernels": 3, "kernel_dim": 2},
            "minibatch_stddev": {"group_size": 2}})):
        reg.wrap(nn.Identity(), D)
    layers = list(D.head)
    assert isinstance(layers[0], MinibatchDiscrimination) and isinstance(layers[1], MinibatchStdDev)
    assert layers[2].in_features == 6 + 3 + 1
    assert hasattr(layers[2], "parametrizations")  # wrapped after the head was extended
    assert D(torch.randn(4, 2)).shape == (4,)


def test_dropout_follows_hidden_activations_only():
    G = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2), nn.Tanh())
    G.out_activation = G[3]
    D = TinyD()
    Dropout(rate=0.5, d=True, g=True).wrap(G, D)
    assert isinstance(G[1], nn.Sequential) and isinstance(G[1][1], nn.Dropout)
    assert isinstance(G[3], nn.Tanh)  # the output activation is left alone
    assert isinstance(D.body[1][1], nn.Dropout) and D.body[1][1].p == 0.5


def test_diversity_is_the_mode_seeking_ratio():
    z = torch.randn(6, 3)
    fake = torch.randn(6, 2, requires_grad=True)
    ctx = StepContext(None, fake, None, None, None, z=z)
    value = DiversityPenalty(weight=2.0, eps=1e-5).g_penalty(ctx)
    f, zz = fake.detach().numpy(), z.numpy()
    ratio = np.abs(f[:3] - f[3:]).mean() / np.abs(zz[:3] - zz[3:]).mean()
    assert value.item() == pytest.approx(2.0 / (ratio + 1e-5), rel=1e-5)


def test_experience_replay_mixes_past_fakes_into_the_batch():
    replay = ExperienceReplay(size=6, fraction=0.5)
    first = torch.arange(4.0).view(4, 1)
    assert torch.equal(replay.d_fakes(first), first)  # buffer empty: nothing to replay yet
    second = torch.arange(10.0, 14.0).view(4, 1)
    mixed = replay.d_fakes(second)
    assert set(mixed[:2].view(-1).tolist()) <= {0.0, 1.0}  # replayed from the first batch
    assert torch.equal(mixed[2:], second[2:])
    assert replay.filled == 4 and replay.cursor == 4
    replay.d_fakes(torch.arange(20.0, 24.0).view(4, 1))
    assert replay.filled == 6 and replay.cursor == 0  # ring buffer: oldest overwritten next


def test_ema_equals_the_closed_form_running_average():
    torch.manual_seed(0)
    G = nn.Linear(3, 2)
    ema = EMA(decay=0.9, warmup=False)
    ema.wrap(G, nn.Identity())
    history = [G.weight.detach().clone()]
    for _ in range(5):
        with torch.no_grad():
            G.weight.add_(torch.randn_like(G.weight))
        history.append(G.weight.detach().clone())
        ema.after_g_step(G)
    k, beta = 5, 0.9
    expected = beta ** k * history[0] + sum((1 - beta) * beta ** (k - i) * history[i]
                                            for i in range(1, k + 1))
    assert torch.allclose(ema.model.weight, expected, atol=1e-6)
    assert not ema.model.weight.requires_grad


def test_ema_warms_up_so_a_short_run_averages_its_trained_weights():
    # decay 0.999 from the first step keeps the average at ~99% G's random start after
    # 10 steps; warmed up, update t uses min(decay, (1 + t) / (10 + t)).
    torch.manual_seed(0)
    G = nn.Linear(3, 2)
    start = G.weight.detach().clone()
    ema = EMA(decay=0.999)
    ema.wrap(G, nn.Identity())
    expected = start.clone()
    for t in range(10):
        with torch.no_grad():
            G.weight.add_(torch.randn_like(G.weight))
        d = min(0.999, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * G.weight.detach()
        ema.after_g_step(G)
    assert torch.allclose(ema.model.weight, expected, atol=1e-6)
    assert ema.updates == 10 and ema.state_dict() == {"updates": 10}
    # Most of the average is now the trained weights, not the start.
    share_of_start = math.prod(min(0.999, (1 + t) / (10 + t)) for t in range(10))
    assert share_of_start < 0.05
    later = EMA(decay=0.999)
    later.load_state_dict(ema.state_dict())  # resumed: the ramp continues where it was
    assert later.current_decay() == min(0.999, 11 / 20)


def test_historical_averaging_penalises_distance_to_the_mean_of_past_weights():
    G, D = nn.Linear(2, 2), nn.Linear(2, 1)
    hist = HistoricalAveraging(weight=0.5, generator=False)
    hist.wrap(G, D)
    ctx = StepContext(None, None, None, torch.zeros(1), D)
    assert hist.d_penalty(ctx).item() == 0.0  # the first weights are the average
    snapshots = [torch.cat([p.detach().view(-1) for p in D.parameters()])]
    for _ in range(3):
        with torch.no_grad():
            for p in D.parameters():
                p.add_(1.0)
        snapshots.append(torch.cat([p.detach().view(-1) for p in D.parameters()]))
        hist.after_d_step(D)
    with torch.no_grad():
        for p in D.parameters():
            p.add_(1.0)
    theta = torch.cat([p.detach().view(-1) for p in D.parameters()])
    mean = torch.stack(snapshots).mean(0)
    assert hist.d_penalty(ctx).item() == pytest.approx(0.5 * (theta - mean).pow(2).sum().item(),
                                                       rel=1e-5)
    assert hist.g_penalty(ctx).item() == 0.0


def test_every_shipped_regularizer_is_registered():
    from pathlib import Path

    shipped = {p.stem for p in (Path(__file__).parents[1] / "configs" / "regularizer").glob("*.yaml")}
    assert shipped == set(REGULARIZERS)
    assert MinibatchDiscriminationLayer.name in shipped and MinibatchStdDevLayer.name in shipped
