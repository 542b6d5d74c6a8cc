"""Fleets' building blocks (issue 21, in progress): stacked networks equal their members'
own, member by member, forward and through training with each member's own learning
rate; members do not move each other; what cannot be stacked yet is named."""

from __future__ import annotations

import pytest
import torch

from ganrun.config.schema import validate
from ganrun.errors import UserError
from ganrun.fleet.optim import StackedAdam
from ganrun.fleet.stack import member_model, stack_models
from ganrun.losses import build_loss
from ganrun.models import build_models

from conftest import FAST, compose_cfg

SMALL = ("dataset=ring8", "model.hidden_dims=[32,32]", "model.latent_dim=8")
VARIANTS = {"batch_norm_g": ("model.batch_norm_g=true",),
            "maxout_d": ("model.batch_norm_g=false", "model.activation_d=maxout",
                         "model.maxout_pieces=3")}
B = 16  # samples per member
# A maxout unit keeps its largest piece: where float32 rounds a batched product and a
# single one apart (an AMD EPYC's AVX-512 kernels do; other CPUs' did not), a near tie
# flips, and 200 steps of training amplify the flip (losses 14% apart); float64 keeps
# the picks.
DTYPES = {"maxout_d": torch.float64}


def members(variant: str, seeds: list[int]):
    cfg = validate(compose_cfg(*FAST, *SMALL, *VARIANTS[variant])[0])
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)  # as a standalone run builds its models
        nets.append(build_models(cfg.model, (2,), 0))
    return cfg, [g for g, _ in nets], [d for _, d in nets]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_stacked_network_is_each_member_own(variant):
    _, Gs, Ds = members(variant, [0, 1, 2])
    fleet_g, fleet_d = stack_models(Gs), stack_models(Ds)
    z = torch.randn(3 * B, 8)
    out = fleet_g(z)
    for k, G in enumerate(Gs):
        torch.testing.assert_close(out[k * B:(k + 1) * B], G(z[k * B:(k + 1) * B]),
                                   rtol=1e-5, atol=1e-6)
    x = torch.randn(3 * B, 2)
    judged = fleet_d(x)
    for k, D in enumerate(Ds):
        torch.testing.assert_close(judged[k * B:(k + 1) * B], D(x[k * B:(k + 1) * B]),
                                   rtol=1e-5, atol=1e-6)
    # Batch norm's running statistics moved per member, as each member's own did.
    for k, G in enumerate(Gs):
        back = member_model(fleet_g, Gs[0], k).state_dict()
        for key, value in G.state_dict().items():
            torch.testing.assert_close(back[key], value, rtol=1e-5, atol=1e-6)
    fleet_g.eval()
    [G.eval() for G in Gs]
    out = fleet_g(z)
    torch.testing.assert_close(out[B:2 * B], Gs[1](z[B:2 * B]), rtol=1e-5, atol=1e-6)


def _train(variant: str, lrs: list[float], steps: int, fleet: bool):
    """`steps` of the non-saturating GAN on ring8-like points, member k seeded k with
    learning rate lrs[k]: as one fleet, or each member alone with torch.optim.Adam.
    Each member draws its noise and data from its own generator. Returns per-member
    D and G losses of the last step, the members' G weights and G's samples of a
    fixed noise (in training mode: batch norm by the batch's statistics)."""
    cfg, Gs, Ds = members(variant, list(range(len(lrs))))
    loss = build_loss(cfg.loss)
    data = torch.randn(512, 2)
    streams = [torch.Generator().manual_seed(100 + k) for k in range(len(lrs))]

    def draw(k):
        z = torch.randn(B, 8, generator=streams[k])
        real = data[torch.randint(512, (B,), generator=streams[k])]
        return z, real

    if fleet:
        G, D = stack_models(Gs), stack_models(Ds)
        m = len(lrs)
        betas, eps, wd = [(0.5, 0.999)] * m, [1e-8] * m, [0.0] * m
        opt_g = StackedAdam(list(G.parameters()), lrs, betas, eps, wd)
        opt_d = StackedAdam(list(D.parameters()), lrs, betas, eps, wd)
        for _ in range(steps):
            zs, reals = zip(*(draw(k) for k in range(m)), strict=True)
            z, real = torch.cat(zs), torch.cat(reals)
            fake = G(z)
            real_out, fake_out = D(real), D(fake.detach())
            # Each member's loss is its own batch's mean: their sum trains every member
            # on exactly its own gradient.
            d_losses = torch.stack([loss.d_loss(real_out[k * B:(k + 1) * B],
                                                fake_out[k * B:(k + 1) * B]) for k in range(m)])
            opt_d.zero_grad()
            d_losses.sum().backward()
            opt_d.step()
            g_out = D(fake)
            g_losses = torch.stack([loss.g_loss(g_out[k * B:(k + 1) * B], None)
                                    for k in range(m)])
            opt_g.zero_grad()
            g_losses.sum().backward()
            opt_g.step()
        members_g = [member_model(G, Gs[0], k) for k in range(m)]
        return (d_losses.detach(), g_losses.detach(), [g.state_dict() for g in members_g],
                _samples(members_g))
    d_last, g_last, weights = [], [], []
    for k, (G, D) in enumerate(zip(Gs, Ds, strict=True)):
        opt_g = torch.optim.Adam(G.parameters(), lrs[k], betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), lrs[k], betas=(0.5, 0.999))
        for _ in range(steps):
            z, real = draw(k)
            fake = G(z)
            d_loss = loss.d_loss(D(real), D(fake.detach()))
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = loss.g_loss(D(fake), None)
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
        d_last.append(d_loss.detach())
        g_last.append(g_loss.detach())
        weights.append(G.state_dict())
    return torch.stack(d_last), torch.stack(g_last), weights, _samples(Gs)


def _samples(generators) -> list[torch.Tensor]:
    z = torch.randn(64, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        return [G.train()(z) for G in generators]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_a_fleet_trains_each_member_as_it_would_train_alone(variant):
    """After 200 steps the losses agree to rel 1e-4 and G's samples to 1e-3 (float32 on a
    CPU: batched and single matrix products round alike here; what differs is the
    rounding of Adam's scalars, amplified by training). The weights are not compared
    one by one: the bias of a layer under batch norm has a gradient of rounding noise
    alone (batch norm cancels it), which Adam turns into steps of any sign; the running
    mean follows that bias with a lag, so samples in eval mode differ by up to 5e-4
    where batch norm is on, and training mode's are compared."""
    lrs = [1e-3, 2e-4, 5e-3]
    previous = torch.get_default_dtype()
    torch.set_default_dtype(DTYPES.get(variant, torch.float32))
    try:
        fleet = _train(variant, lrs, 200, fleet=True)
        alone = _train(variant, lrs, 200, fleet=False)
    finally:
        torch.set_default_dtype(previous)
    torch.testing.assert_close(fleet[0], alone[0], rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(fleet[1], alone[1], rtol=1e-4, atol=1e-6)
    for mine, theirs in zip(fleet[3], alone[3], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-3, atol=1e-4)


def test_a_member_learning_rate_moves_no_other_member():
    base = _train("batch_norm_g", [1e-3, 1e-3, 1e-3], 30, fleet=True)
    other = _train("batch_norm_g", [1e-3, 3e-2, 1e-3], 30, fleet=True)
    assert not torch.allclose(base[1][1], other[1][1])  # member 1 did change
    for k in (0, 2):
        assert torch.equal(base[0][k], other[0][k]) and torch.equal(base[1][k], other[1][k])
        for key, value in base[2][k].items():
            assert torch.equal(value, other[2][k][key]), key


def test_a_stacked_dcgan_is_each_member_own():
    """Convolutions as one grouped convolution, batch norm over each member's own batch
    and positions: G and D of three DCGAN members, outputs and running statistics."""
    cfg = validate(compose_cfg(*FAST, "model=dcgan", "dataset.image_size=32")[0])
    nets = []
    for seed in range(3):
        torch.manual_seed(seed)
        nets.append(build_models(cfg.model, (1, 32, 32), 0))
    Gs, Ds = [g for g, _ in nets], [d for _, d in nets]
    fleet_g, fleet_d = stack_models(Gs), stack_models(Ds)
    b = 4
    z = torch.randn(3 * b, cfg.model.latent_dim)
    images = fleet_g(z)
    judged = fleet_d(images)
    for k in range(3):
        rows = slice(k * b, (k + 1) * b)
        own = Gs[k](z[rows])
        torch.testing.assert_close(images[rows], own, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(judged[rows], Ds[k](own), rtol=1e-4, atol=1e-5)
        back = member_model(fleet_g, Gs[0], k).state_dict()
        for key, value in Gs[k].state_dict().items():
            torch.testing.assert_close(back[key], value, rtol=1e-5, atol=1e-6)


def test_a_layer_that_cannot_be_stacked_is_named():
    nets = [torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)) for _ in range(2)]
    with pytest.raises(UserError, match=r"^LayerNorm \(1\) cannot join a fleet yet: fleets "
                                        r"stack Linear, BatchNorm1d, Embedding, Conv2d, "
                                        r"ConvTranspose2d, BatchNorm2d, "
                                        r"MinibatchDiscrimination$"):
        stack_models(nets)


# --- stacked optimizers: torch.optim's arithmetic, per member --------------------------------

OPTIMIZERS = {  # option -> (members' settings, torch.optim per member, the stacked one)
    "adam": ([{"lr": 1e-3, "betas": (0.5, 0.999), "eps": 1e-8, "weight_decay": 0.0},
              {"lr": 3e-4, "betas": (0.9, 0.99), "eps": 1e-6, "weight_decay": 1e-2},
              {"lr": 2e-2, "betas": (0.0, 0.9), "eps": 1e-8, "weight_decay": 0.0}],
             torch.optim.Adam, "adam"),
    "rmsprop": ([{"lr": 1e-3, "alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "weight_decay": 0.0},
                 {"lr": 5e-4, "alpha": 0.9, "eps": 1e-6, "momentum": 0.9, "weight_decay": 1e-3},
                 {"lr": 1e-2, "alpha": 0.5, "eps": 1e-8, "momentum": 0.5, "weight_decay": 0.0}],
                torch.optim.RMSprop, "rmsprop"),
    "sgd": ([{"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False},
             {"lr": 5e-2, "momentum": 0.9, "weight_decay": 1e-3, "nesterov": False},
             {"lr": 1e-3, "momentum": 0.5, "weight_decay": 0.0, "nesterov": False}],
            torch.optim.SGD, "sgd"),
    "sgd_nesterov": ([{"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.0, "nesterov": True},
                      {"lr": 5e-2, "momentum": 0.5, "weight_decay": 1e-3, "nesterov": True}],
                     torch.optim.SGD, "sgd"),
}


@pytest.mark.parametrize("option", sorted(OPTIMIZERS))
def test_a_stacked_optimizer_updates_each_member_as_torch_optim_does(option):
    from omegaconf import OmegaConf

    from ganrun.fleet.optim import stacked_optimizer

    settings, torch_optimizer, name = OPTIMIZERS[option]
    m = len(settings)
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(m, 4, 5, generator=gen), torch.randn(m, 1, 5, generator=gen)]
    stacked = [p.clone().requires_grad_() for p in start]
    alone = [[p[k].clone().requires_grad_() for p in start] for k in range(m)]
    cfgs = [OmegaConf.create({"name": name, **s}) for s in settings]
    opt = stacked_optimizer(cfgs, stacked, [s["lr"] for s in settings])
    theirs = [torch_optimizer(alone[k], **settings[k]) for k in range(m)]
    for _ in range(25):
        grads = [torch.randn(p.shape, generator=gen) for p in start]
        opt.zero_grad()
        for p, g in zip(stacked, grads, strict=True):
            p.grad = g.clone()
        opt.step()
        for k in range(m):
            theirs[k].zero_grad()
            for p, g in zip(alone[k], grads, strict=True):
                p.grad = g[k].clone()
            theirs[k].step()
    for k in range(m):
        for mine, their in zip(stacked, alone[k], strict=True):
            torch.testing.assert_close(mine[k], their, rtol=1e-6, atol=1e-7)


def test_an_optimizer_that_cannot_join_a_fleet_is_named():
    from omegaconf import OmegaConf

    from ganrun.fleet.optim import stacked_optimizer

    p = [torch.zeros(2, 3, requires_grad=True)]
    with pytest.raises(UserError, match="^optim=adagrad cannot join a fleet yet: fleets train "
                                        "with adam, rmsprop or sgd$"):
        stacked_optimizer([OmegaConf.create({"name": "adagrad", "weight_decay": 0.0})] * 2, p,
                          [1e-3, 1e-3])
    with pytest.raises(UserError, match="share one optimizer; got adam, sgd"):
        stacked_optimizer([OmegaConf.create({"name": "adam"}), OmegaConf.create({"name": "sgd"})],
                          p, [1e-3, 1e-3])


# --- which jobs join a fleet -------------------------------------------------------------

@pytest.mark.parametrize("overrides,named", [
    (("model=resnet",), "model=resnet"),
    (("optim=adagrad",), "optim=adagrad"),
    (("regularizer=[experience_replay]",), "regularizer=experience_replay"),
    (("+callbacks.mine._target_=pytorch_lightning.callbacks.LearningRateMonitor",),
     "callbacks.mine"),
    (("trainer=ddp", "trainer.accelerator=cpu"), "trainer (fleets train in one process"),
])
def test_what_cannot_join_a_fleet_is_named(overrides, named):
    from ganrun.fleet.plan import refusal

    assert refusal(validate(compose_cfg(*FAST, *overrides)[0])).startswith(named)
    assert refusal(validate(compose_cfg(*FAST)[0])) is None


def test_float16_cannot_join_a_fleet():
    """On a GPU (validated as such here: a CPU refuses float16 before any fleet)."""
    from ganrun.fleet.plan import refusal

    cfg = validate(compose_cfg(*FAST)[0])
    cfg.trainer.precision = "16-mixed"
    assert refusal(cfg).startswith("trainer.precision=16-mixed (float16 needs a loss scaler")


def test_jobs_are_grouped_by_structure_in_fleets_of_at_most_size():
    from ganrun.fleet.plan import plan

    jobs = [validate(compose_cfg(*FAST, *o)[0]) for o in [
        ("seed=0",), ("seed=1", "optim.lr_g=1e-3"), ("loss=hinge",), ("seed=2",),
        ("regularizer=[experience_replay]",), ("loss=hinge", "seed=1"), ("seed=3",)]]
    assert plan(jobs, size=3) == [[0, 1, 3], [2, 5], [4], [6]]
    assert plan([*jobs[:2], None], size=16) == [[0, 1], [2]]  # None: could not be composed
