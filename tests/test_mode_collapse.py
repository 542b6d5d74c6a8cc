"""Mode collapse: DynGAN's detector and partitions, PacGAN's packing, Unrolled GAN's
gradient, each against a case whose answer is computed independently."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from test_faults import load_ckpt
from torch import nn

from ganrun.config.schema import validate
from ganrun.losses import real_probability as collapse_probability
from ganrun.models import build_models
from ganrun.models.layers import pack_samples
from ganrun.regularizers.dyngan import DynGAN, weighted_kmeans
from ganrun.training.module import GANModule

from conftest import compose_cfg


def ring_with_modes(per_mode: int = 50, std: float = 0.02, seed: int = 0):
    """Points of the ring of 8 (radius 2), `per_mode` each, and their modes."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(8) * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([angles.cos(), angles.sin()], 1)
    modes = torch.arange(8).repeat_interleave(per_mode)
    return centres[modes] + std * torch.randn(len(modes), 2, generator=g), modes, centres


def optimal_d(x: torch.Tensor, centres: torch.Tensor, covered: list[int], std: float):
    """D*(x) = p(x) / (p(x) + q(x)): p the 8 modes uniformly, q only the covered ones."""
    log_n = -((x[:, None] - centres[None]) ** 2).sum(2) / (2 * std**2)  # up to a constant
    p = torch.logsumexp(log_n, 1) - math.log(8)
    q = torch.logsumexp(log_n[:, covered], 1) - math.log(len(covered))
    return torch.sigmoid(p - q)  # p / (p + q)


# --- DynGAN -------------------------------------------------------------------------


def test_dyngan_finds_exactly_the_missing_modes_and_moves_them_to_a_new_partition():
    x, modes, centres = ring_with_modes()
    dyn = DynGAN(delta=0.2, ema=0.5, max_partitions=4)
    dyn.bind(len(x), "cpu")
    probability = optimal_d(x, centres, covered=[0, 1, 2, 3], std=0.02)
    # On the covered modes D* = (1/8) / (1/8 + 1/4) = 1/3; on the missing ones ~1.
    assert torch.allclose(probability[modes < 4], torch.tensor(1 / 3), atol=1e-4)
    for _ in range(2):  # score 1 - 0.5^2 = 0.75 < 1 / 1.2 = 0.833: not yet
        collapsed = dyn.detect(probability)
    assert not collapsed.any()
    collapsed = dyn.detect(probability)  # 1 - 0.5^3 = 0.875
    assert torch.equal(collapsed, modes >= 4) and dyn.collapsed_share == 0.5
    assert dyn.split(collapsed, features=x)
    assert dyn.partitions == 2
    assert torch.equal(dyn.partition, (modes >= 4).long())
    assert torch.equal(dyn.prior, torch.tensor([0.5, 0.5, 0.0, 0.0]))
    # Generated partitions follow the prior: only 0 and 1, about half each.
    drawn = dyn.sample_labels(4000, generator=torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1} and abs(drawn.float().mean() - 0.5) < 0.03
    # Now G covers partition 0's modes and modes 4, 5 only: 6 and 7 split off again,
    # from partition 1 into partition 2.
    probability = optimal_d(x, centres, covered=[0, 1, 2, 3, 4, 5], std=0.02)
    dyn.scores.zero_()
    for _ in range(3):
        collapsed = dyn.detect(probability)
    assert torch.equal(collapsed, modes >= 6)
    assert dyn.split(collapsed, features=x)
    assert torch.equal(dyn.partition, (modes >= 4).long() + (modes >= 6).long())
    assert torch.equal(dyn.prior, torch.tensor([0.5, 0.25, 0.25, 0.0]))


def test_dyngan_splits_only_past_min_collapsed_and_below_max_partitions():
    x, modes, centres = ring_with_modes()
    collapsed = modes == 7  # 1/8 of the data
    dyn = DynGAN(min_collapsed=0.2, max_partitions=2)
    dyn.bind(len(x), "cpu")
    dyn.collapsed_share = 0.125
    assert not dyn.split(collapsed, x) and dyn.partitions == 1
    dyn.min_collapsed = 0.1
    assert dyn.split(collapsed, x) and dyn.partitions == 2
    assert not dyn.split(modes == 6, x) and dyn.partitions == 2  # at the cap


def test_weighted_kmeans_keeps_covered_samples_and_lets_collapsed_ones_move():
    """A collapsed sample (score ~1) put in the wrong partition moves to the nearer
    centre; a covered one (score ~0) stays in its partition even when nearer another."""
    features = torch.tensor([[0.0], [0.2], [10.0], [10.2], [9.0], [0.8]])
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    scores = torch.tensor([0.5, 0.5, 0.5, 0.5, 1.0, 0.01])
    out = weighted_kmeans(features, labels, scores, k=2)
    # sample 4 (at 9.0, score 1) joins partition 1; sample 5 (at 0.8, score 0.01) stays in 1
    assert out.tolist() == [0, 0, 1, 1, 1, 1]


def test_a_budget_too_short_for_any_detection_is_named(caplog):
    # Scores start at 0: 6 detections of ema 0.1 reach 1 - 0.9^6 = 0.47 < 1/1.2.
    with caplog.at_level("WARNING", logger="ganrun"):
        DynGAN(detect_every=500, partition_every=3000, total_steps=3000)
    assert "6 detections in train.steps=3000 raise a score to at most 0.469" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ganrun"):
        DynGAN(detect_every=500, partition_every=3000, total_steps=30000)
        DynGAN(detect_every=None, partition_every=None, total_steps=3000)  # scaled: 60
    assert caplog.text == ""


def test_collapse_probability_of_a_critic_is_its_rank_among_generated_samples():
    fake = torch.tensor([0.0, 1.0, 2.0, 3.0])
    real = torch.tensor([-1.0, 1.5, 5.0])
    assert collapse_probability(real, fake, probability=False).tolist() == [0.0, 0.5, 1.0]
    assert torch.allclose(collapse_probability(real, None, probability=True), torch.sigmoid(real))


DYNGAN_RUN = ("dataset=ring8", "dataset.n_samples=400", "dataset.batch_size=50",
              "regularizer=[dyngan]", "regularizer.dyngan.detect_every=2",
              "regularizer.dyngan.partition_every=4", "regularizer.dyngan.ema=0.9",
              "regularizer.dyngan.delta=1.0", "train.steps=12", "log.every=1",
              "train.ckpt_every=5")


def test_dyngan_partitions_and_prior_survive_checkpoint_and_resume_bit_for_bit(
        train_fast, monkeypatch):
    import os
    import signal

    from ganrun.errors import Interrupted

    whole, whole_dir = train_fast(*DYNGAN_RUN, name="whole")
    original = GANModule._g_step

    def sigterm_during_step_7(self, *args):
        if self.g_steps == 6 and self.stop_signal is None:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(GANModule, "_g_step", sigterm_during_step_7)
    with pytest.raises(Interrupted):
        train_fast(*DYNGAN_RUN, name="cut")
    monkeypatch.undo()
    cut_dir = whole_dir.parent / "cut"
    cut_state = load_ckpt(cut_dir)["ganrun"]["regularizers"]["dyngan"]
    assert cut_state["partitions"] > 1  # split at step 4, before the cut
    resumed, resumed_dir = train_fast(*DYNGAN_RUN, f"ckpt_path={cut_dir}", name="resumed")
    assert resumed["losses"] == whole["losses"]
    a, b = load_ckpt(whole_dir), load_ckpt(resumed_dir)
    sa, sb = a["ganrun"]["regularizers"]["dyngan"], b["ganrun"]["regularizers"]["dyngan"]
    for key in ("scores", "partition", "prior"):
        assert torch.equal(sa[key], sb[key]), key
    assert sa["partitions"] == sb["partitions"] and sa["splits"] == sb["splits"]
    # metrics.json tells the same: partitions, their prior, every split
    assert whole["dyngan"]["partitions"] == sa["partitions"]
    assert whole["dyngan"]["splits"] == sa["splits"]
    assert whole["dyngan"]["prior"] == pytest.approx(sa["prior"][:sa["partitions"]].tolist())
    assert [s["step"] for s in sa["splits"]][-1] > 7  # a split after the cut, too
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    # TensorBoard shows the partitions and the collapsed share.
    from tbread import scalars

    logged = scalars(whole_dir / "tb")
    assert [s for s, _ in logged["dyngan/partitions"]] == [2, 4, 6, 8, 10, 12]
    assert logged["dyngan/partitions"][-1][1] == sa["partitions"]


def test_dyngan_trains_on_images_and_its_samples_draw_partitions_from_the_prior(train_fast):
    result, run_dir = train_fast("dataset=digits", "dataset.image_size=8", "regularizer=[dyngan]",
                                 "regularizer.dyngan.detect_every=2",
                                 "regularizer.dyngan.partition_every=2",
                                 "regularizer.dyngan.ema=1.0", "regularizer.dyngan.delta=2.0",
                                 "train.steps=6", "model.hidden_dims=[32]")
    assert result["status"] == "finished"
    from ganrun.cli.tools import load_module, sample

    state = load_ckpt(run_dir)["ganrun"]["regularizers"]["dyngan"]
    assert state["partitions"] > 1
    module, _ = load_module(run_dir / "checkpoints" / "last.ckpt")  # as ganrun-sample does
    drawn = module.sample_labels(2000)
    used = set(torch.nonzero(state["prior"]).flatten().tolist())
    assert set(drawn.tolist()) == used  # every partition with data, and no other
    assert sample(str(run_dir), n=16).is_file()


# --- PacGAN -------------------------------------------------------------------------


@pytest.mark.parametrize("model,shape", [("mlp", (2,)), ("mlp", (1, 8, 8)), ("dcgan", (1, 8, 8)),
                                         ("resnet", (3, 16, 16))])
def test_pacgan_d_judges_pack_samples_at_once(model, shape):
    extra = ["dataset=ring8"] if shape == (2,) else ["dataset=digits" if shape[0] == 1
                                                     else "dataset=image_folder",
                                                     f"dataset.image_size={shape[-1]}",
                                                     f"dataset.channels={shape[0]}",
                                                     "dataset.root=/nowhere"]
    cfg = validate(compose_cfg(f"model={model}", *extra, "regularizer=[pacgan]",
                               "regularizer.pacgan.pack=3")[0])
    G, D = build_models(cfg.model, shape, pack=3)
    first = next(m for m in D.modules() if isinstance(m, nn.Linear | nn.Conv2d))
    width = first.in_features if isinstance(first, nn.Linear) else first.in_channels
    assert width == (6 if shape == (2,) else 3 * math.prod(shape) if model == "mlp" else 3 * shape[0])
    x = torch.randn(12, *shape)
    assert D(x).shape == (4,)
    # Pack i holds samples 3i, 3i+1, 3i+2, side by side along the channels / features.
    packed = pack_samples(x, 3)
    assert torch.equal(packed[1, :shape[0]], x[3]) and torch.equal(packed[1, -shape[0]:], x[5])


def test_pacgan_loss_on_a_hand_computed_case():
    cfg = validate(compose_cfg("dataset=ring8", "regularizer=[pacgan]", "loss=nsgan")[0])
    module = GANModule(cfg, (2,))
    D = module.D
    D.body = nn.Flatten()
    D.head = nn.Linear(4, 1)
    with torch.no_grad():
        D.head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 3.0]]))
        D.head.bias.fill_(0.25)
    real = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [-1.0, 0.5]])
    fake = torch.tensor([[0.5, 0.5], [1.0, -1.0], [0.0, 0.0], [3.0, 1.0]])
    # Packs: real (1, 0, 0, 1), (2, 2, -1, 0.5); fake (0.5, 0.5, 1, -1), (0, 0, 3, 1).
    w, b = [1.0, -2.0, 0.5, 3.0], 0.25

    def logit(v):
        return sum(wi * vi for wi, vi in zip(w, v, strict=True)) + b

    real_logits = [logit([1, 0, 0, 1]), logit([2, 2, -1, 0.5])]
    fake_logits = [logit([0.5, 0.5, 1, -1]), logit([0, 0, 3, 1])]

    def softplus(t):
        return math.log1p(math.exp(t))

    expected = (sum(softplus(-t) for t in real_logits) / 2
                + sum(softplus(t) for t in fake_logits) / 2)
    loss, real_out, _, fake_out, _ = module._d_objective(real, None, fake, None)
    assert real_out.tolist() == real_logits and fake_out.tolist() == fake_logits
    assert abs(float(loss) - expected) < 1e-6


def test_pacgan_batch_counts_decisions_as_in_the_paper(train_fast):
    result, _ = train_fast("dataset=ring8", "regularizer=[pacgan]", "regularizer.pacgan.pack=4",
                           "dataset.batch_size=25", "train.steps=3")
    assert result["images_seen"] == 3 * 25 * 4  # batch_size packs of 4 samples per D step


# --- Unrolled GAN -------------------------------------------------------------------


def _tiny_module(optim: str, lr_d: float, steps: int = 1) -> GANModule:
    cfg = validate(compose_cfg("dataset=ring8", "regularizer=[unrolled]",
                               f"regularizer.unrolled.steps={steps}", f"optim={optim}",
                               f"optim.lr_d={lr_d}", "model.hidden_dims=[8]",
                               "model.batch_norm_g=false", "model.latent_dim=3",
                               "loss=nsgan")[0])
    torch.manual_seed(0)
    return GANModule(cfg, (2,))


def _hand_unrolled_g_grads(module, real, z, update):
    """G's gradient after one hand-written unrolled D update: D(x) = w2 . lrelu(W1 x + b1)
    + b2 written out; D's nsgan loss differentiated by autograd with its graph kept,
    `update(theta, grad)` the optimizer's rule, G's loss at the new theta."""
    lin1, head = module.D.body[1], module.D.head
    theta = [t.detach().clone().requires_grad_(True)
             for t in (lin1.weight, lin1.bias, head.weight, head.bias)]

    def d(x, w1, b1, w2, b2):
        return (F.leaky_relu(x @ w1.T + b1, 0.2) @ w2.T + b2).squeeze(1)

    fake = module.G(z)
    d_loss = F.softplus(-d(real, *theta)).mean() + F.softplus(d(fake, *theta)).mean()
    grads = torch.autograd.grad(d_loss, theta, create_graph=True)
    new = [update(t, g) for t, g in zip(theta, grads, strict=True)]
    g_loss = F.softplus(-d(fake, *new)).mean()
    return torch.autograd.grad(g_loss, list(module.G.parameters()))


def _module_unrolled_g_grads(module, real, z):
    from ganrun.optim import OPTIMIZERS

    opt_d = module.configure_optimizers()[1]
    fake = module.G(z)
    reg = module._hooks["unroll"][0]
    params = reg.unroll(module.D, lambda p: module._d_objective(real, None, fake, None, p)[0],
                        opt_d, OPTIMIZERS[module.cfg.optim.name])
    out, _ = module.discriminate(fake, None, params)
    return torch.autograd.grad(module.loss.g_loss(out), list(module.G.parameters()))


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_unrolled_g_gradient_equals_a_hand_written_one_step_unroll(optim):
    module = _tiny_module(optim, lr_d=0.5)
    module.D.requires_grad_(False)  # as in the G step
    real, z = torch.randn(16, 2), torch.randn(16, 3)
    before = [p.clone() for p in module.D.parameters()]
    ours = _module_unrolled_g_grads(module, real, z)
    if optim == "sgd":
        def update(t, g):
            return t - 0.5 * g
    else:  # Adam's first step from zero moments: m = (1-b1) g, v = (1-b2) g^2, bias-corrected
        b1, b2 = module.cfg.optim.betas

        def update(t, g):
            m_hat = (1 - b1) * g / (1 - b1)
            v_hat = (1 - b2) * g * g / (1 - b2)
            return t - 0.5 * m_hat / (v_hat.sqrt() + module.cfg.optim.eps)
    hand = _hand_unrolled_g_grads(module, real, z, update)
    for a, b in zip(ours, hand, strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    # Unrolling does not touch D itself.
    assert all(torch.equal(a, b) for a, b in zip(before, module.D.parameters(), strict=True))
    # And it matters: the plain G gradient differs.
    fake = module.G(z)
    out, _ = module.discriminate(fake, None)
    plain = torch.autograd.grad(module.loss.g_loss(out), list(module.G.parameters()))
    assert not all(torch.allclose(a, b) for a, b in zip(ours, plain, strict=True))


def test_unrolled_refuses_an_optimizer_it_cannot_differentiate():
    from ganrun.errors import UserError

    with pytest.raises(UserError, match="optim=rmsprop has no differentiable update .use adam or sgd"):
        validate(compose_cfg("regularizer=[unrolled]", "optim=rmsprop")[0])
