"""Fleets end to end (issue 21): member k of a fleet is the run it would have been
alone, for every loss and both model families, with its own seed and numbers; members
do not move each other; a fleet of one is the standalone run; each member writes a
normal run directory; member checkpoints resume alone and as a fleet; SIGTERM saves
every member; a diverged member stops alone.

Tolerance. In float64 (trainer.precision=64-true) a member and its standalone run
agree to rel 1e-9 after 200 steps: same random draws, same arithmetic, the stacked
kernels' rounding only. In float32 the batched matrix products round differently
from the single ones (1e-7 per step), and a GAN amplifies it (rel 1e-3 on ring8 after
50 steps), so float32 runs are compared over their first steps (rel 1e-5)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ganrun.fleet.run import run_fleet
from ganrun.training.run import run

from conftest import compose_cfg
from tbread import scalars

EXACT = ("trainer.precision=64-true", "trainer.accelerator=cpu", "dataset=ring8",
         "model.hidden_dims=[32,32]", "model.latent_dim=8", "dataset.batch_size=64",
         "train.steps=200", "train.ckpt_every=100", "log.every=50", "log.sample_every=200",
         "metrics.names=[modes]", "metrics.every=200", "metrics.n_fake=500",
         "metrics.n_real=500")
# Each member's own numbers: a seed, learning rates, betas (and a loss's numbers).
MEMBERS = [("seed=0",), ("seed=1", "optim.lr_g=5e-4", "optim.betas=[0.6,0.99]")]
LOSS_NUMBERS = {"lsgan": [(), ("loss.a=-1", "loss.b=1", "loss.c=0")]}


def _cfgs(common, members):
    return [compose_cfg(*common, *own)[0] for own in members]


def _logged(run_dir):
    """Every scalar logged to TensorBoard, by tag and step."""
    return {tag: dict(points) for tag, points in scalars(run_dir / "tb").items()
            if not tag.startswith("perf/")}


def _close(a, b, rel: float, where) -> None:
    if isinstance(b, dict):
        assert sorted(a) == sorted(b), where
        for key in b:
            _close(a[key], b[key], rel, (*where, key))
    elif b is None or isinstance(b, str):  # not measurable (no sample near a mode), a name
        assert a == b, where
    else:
        assert math.isclose(a, b, rel_tol=rel, abs_tol=rel), (where, a, b)


def assert_same_run(fleet_dir, alone_dir, rel: float, tags: tuple[str, ...] = ("",)) -> None:
    """The member's run directory holds what its standalone run's does, numbers within
    `rel`: every logged scalar (those starting with one of `tags`) at every step, the
    final losses and metrics."""
    fleet, alone = _logged(fleet_dir), _logged(alone_dir)
    assert sorted(fleet) == sorted(alone)
    for tag, points in alone.items():
        assert sorted(fleet[tag]) == sorted(points), tag
        if tag.startswith(tags):
            _close(fleet[tag], points, rel, (tag,))
    fleet_json = json.loads((fleet_dir / "metrics.json").read_text())
    alone_json = json.loads((alone_dir / "metrics.json").read_text())
    assert fleet_json["status"] == alone_json["status"] == "finished"
    assert fleet_json["g_steps"] == alone_json["g_steps"]
    assert fleet_json["images_seen"] == alone_json["images_seen"]
    _close(fleet_json["losses"], alone_json["losses"], rel, ("losses",))
    _close(fleet_json["metrics"], alone_json["metrics"], rel, ("metrics",))
    if "health" in alone_json:
        assert sorted(fleet_json["health"]) == sorted(alone_json["health"])
    assert sorted(p.name for p in (fleet_dir / "samples").iterdir()) == \
        sorted(p.name for p in (alone_dir / "samples").iterdir())


LOSSES = ["bce", "nsgan", "wgan", "wgan_gp", "lsgan", "hinge", "ragan", "mmd"]


@pytest.mark.parametrize("loss", LOSSES)
def test_each_member_is_the_run_it_would_be_alone(tmp_path, loss):
    own = LOSS_NUMBERS.get(loss, [(), ()])
    members = [(*m, *o) for m, o in zip(MEMBERS, own, strict=True)]
    cfgs = _cfgs((*EXACT, f"loss={loss}"), members)
    results = run_fleet(cfgs, [tmp_path / "fleet0", tmp_path / "fleet1"])
    assert [r["fleet"]["member"] for r in results] == [0, 1]
    assert results[1]["fleet"]["members"] == ["fleet0", "fleet1"]
    # member 1 (its own seed and numbers) against its standalone run
    run(_cfgs((*EXACT, f"loss={loss}"), members[1:])[0], tmp_path / "alone1")
    assert_same_run(tmp_path / "fleet1", tmp_path / "alone1", rel=1e-9)


@pytest.mark.parametrize("extra", [(), ("regularizer=[spectral_norm]",
                                        "regularizer.spectral_norm.generator=true")],
                         ids=["plain", "spectral_norm"])
def test_a_dcgan_fleet_member_is_its_standalone_run(tmp_path, extra):
    common = ("trainer.precision=64-true", "trainer.accelerator=cpu", "model=dcgan",
              "model.base_channels=8", "model.latent_dim=16", "dataset.batch_size=16",
              "train.steps=20", "log.every=10", "log.sample_every=20", "metrics=none", *extra)
    cfgs = _cfgs(common, MEMBERS)
    run_fleet(cfgs, [tmp_path / "fleet0", tmp_path / "fleet1"])
    run(cfgs[0], tmp_path / "alone0")
    assert_same_run(tmp_path / "fleet0", tmp_path / "alone0", rel=1e-9)


def test_a_fleet_of_one_is_the_standalone_run(tmp_path):
    cfg = _cfgs(EXACT, MEMBERS[1:])
    run_fleet(cfg, [tmp_path / "fleet"])
    run(cfg[0], tmp_path / "alone")
    assert_same_run(tmp_path / "fleet", tmp_path / "alone", rel=1e-9)


def test_float32_members_follow_their_standalone_runs(tmp_path):
    common = ("trainer.accelerator=cpu", "dataset=ring8", "model.hidden_dims=[32,32]",
              "train.steps=10", "log.every=1", "log.sample_every=10", "metrics=none")
    cfgs = _cfgs(common, MEMBERS)
    run_fleet(cfgs, [tmp_path / "fleet0", tmp_path / "fleet1"])
    run(cfgs[1], tmp_path / "alone1")
    # the health values count samples near modes: a sample on a threshold tips them
    assert_same_run(tmp_path / "fleet1", tmp_path / "alone1", rel=1e-5, tags=("loss/", "D/"))


def test_a_member_learning_rate_moves_no_other_member(tmp_path):
    """Float32, bit for bit: member 0's numbers whatever member 1's learning rate."""
    common = ("trainer.accelerator=cpu", "dataset=ring8", "model.hidden_dims=[32,32]",
              "train.steps=60", "log.every=20", "log.sample_every=60", "metrics=none")
    run_fleet(_cfgs(common, [("seed=0",), ("seed=1", "optim.lr_g=1e-3")]),
              [tmp_path / "a0", tmp_path / "a1"])
    run_fleet(_cfgs(common, [("seed=0",), ("seed=1", "optim.lr_g=1e-5")]),
              [tmp_path / "b0", tmp_path / "b1"])
    assert _logged(tmp_path / "a0") == _logged(tmp_path / "b0")
    assert _logged(tmp_path / "a1") != _logged(tmp_path / "b1")
    first = torch.load(tmp_path / "a0/checkpoints/last.ckpt", weights_only=False)
    second = torch.load(tmp_path / "b0/checkpoints/last.ckpt", weights_only=False)
    for key, value in first["state_dict"].items():
        assert torch.equal(value, second["state_dict"][key]), key


# --- checkpoints, signals, divergence ---------------------------------------------------

def _stacked_states(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


def test_sigterm_saves_every_member_and_the_resumed_fleet_matches_an_uninterrupted_one(
        tmp_path, monkeypatch):
    """Float32, bit for bit: a fleet of 3 stopped by SIGTERM at step 7 and resumed from
    its members' checkpoints ends where the uninterrupted fleet does."""
    import os
    import signal

    from ganrun.errors import Interrupted
    from ganrun.fleet.module import FleetModule

    common = ("trainer.accelerator=cpu", "dataset=ring8", "model.hidden_dims=[32,32]",
              "train.steps=12", "train.ckpt_every=5", "log.every=1", "log.sample_every=12",
              "metrics=none")
    three = [*MEMBERS, ("seed=2", "optim.lr_d=5e-4")]
    whole = run_fleet(_cfgs(common, three), [tmp_path / f"whole{k}" for k in range(3)])

    original = FleetModule._g_step

    def sigterm_during_step_7(self, *args):
        if self.shells[0].g_steps == 6 and self.stop_signal is None:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, *args)

    monkeypatch.setattr(FleetModule, "_g_step", sigterm_during_step_7)
    with pytest.raises(Interrupted, match="SIGTERM at generator step 7"):
        run_fleet(_cfgs(common, three), [tmp_path / f"cut{k}" for k in range(3)])
    monkeypatch.undo()
    for k in range(3):
        cut = json.loads((tmp_path / f"cut{k}" / "metrics.json").read_text())
        assert cut["status"] == "interrupted" and cut["g_steps"] == 7, cut
        assert _stacked_states(tmp_path / f"cut{k}")["ganrun"]["g_steps"] == 7

    resumed = run_fleet(
        _cfgs(common, [(*own, f"ckpt_path={tmp_path / f'cut{k}'}") for k, own in enumerate(three)]),
        [tmp_path / f"resumed{k}" for k in range(3)])
    for k in range(3):
        assert resumed[k]["status"] == "finished" and resumed[k]["g_steps"] == 12
        assert resumed[k]["images_seen"] == whole[k]["images_seen"]
        assert resumed[k]["losses"] == whole[k]["losses"]
        a = _stacked_states(tmp_path / f"whole{k}")
        b = _stacked_states(tmp_path / f"resumed{k}")
        assert all(torch.equal(a["state_dict"][key], b["state_dict"][key]) for key in a["state_dict"])
        # each member's checkpoint holds its own optimizer state, in torch's names
        for saved, again in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
            for i, state in saved["state"].items():
                assert sorted(state) == ["exp_avg", "exp_avg_sq", "step"]
                assert all(torch.equal(state[n], again["state"][i][n]) for n in state)


def test_a_member_checkpoint_resumes_alone_as_its_standalone_run(tmp_path):
    half = tuple(o for o in EXACT if not o.startswith("train.steps")) + ("train.steps=100",)
    run_fleet(_cfgs(half, MEMBERS), [tmp_path / "fleet0", tmp_path / "fleet1"])
    ckpt = _stacked_states(tmp_path / "fleet1")
    # a checkpoint of its own: member 1's weights only, and every Adam state stepped 100 times
    alone_half = torch.load(tmp_path / "fleet1" / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["ganrun"]["g_steps"] == 100
    assert all(float(s["step"]) == 100 for opt in alone_half["optimizer_states"]
               for s in opt["state"].values())
    member1 = MEMBERS[1]
    run(_cfgs(EXACT, [(*member1, f"ckpt_path={tmp_path / 'fleet1'}")])[0], tmp_path / "resumed")
    run(_cfgs(EXACT, [member1])[0], tmp_path / "whole")
    # its own size: the stack's other members are not in it
    size = (tmp_path / "fleet1/checkpoints/last.ckpt").stat().st_size
    assert size < 1.1 * (tmp_path / "whole/checkpoints/last.ckpt").stat().st_size
    resumed = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    _close(resumed["losses"], whole["losses"], 1e-9, ("losses",))
    _close(resumed["metrics"], whole["metrics"], 1e-9, ("metrics",))


@pytest.mark.parametrize("on_diverge", ["stop", "restore"])
def test_a_diverging_member_stops_or_rolls_back_alone(tmp_path, on_diverge):
    common = ("trainer.precision=64-true", "trainer.accelerator=cpu", "dataset=ring8",
              "model.hidden_dims=[32,32]", "optim=sgd", "train.steps=30", "train.ckpt_every=5",
              "log.every=5", "log.sample_every=30", "metrics=none",
              f"train.on_diverge={on_diverge}", "train.max_restores=2")
    sane = ("seed=1", "optim.lr_d=0.01")
    results = run_fleet(_cfgs(common, [("seed=0", "optim.lr_d=1e6"), sane, ("seed=2",)]),
                        [tmp_path / "wild", tmp_path / "sane", tmp_path / "third"])
    wild = results[0]
    assert results[2]["status"] == "finished" and results[2]["g_steps"] == 30
    if on_diverge == "stop":
        assert wild["status"] == "diverged" and "nan" in wild["reason"], wild
        assert wild["g_steps"] == wild["diverged_at"] < 30
    else:  # rolled back twice, then stopped: its own checkpoint, its own learning rates
        assert len(wild["restores"]) == 2 and wild["status"] == "diverged", wild
        assert [r["lr_scale"] for r in wild["restores"]] == [0.5, 0.25]
    run(_cfgs(common, [sane])[0], tmp_path / "alone")
    assert_same_run(tmp_path / "sane", tmp_path / "alone", rel=1e-9)


# Every regularizer that joins fleets, with what each of two members sets of its own
# (member 1 also its own seed, learning rate and betas).
JOINING = {
    "gradient_penalty": ("regularizer.gradient_penalty.weight=5",),
    "r1": ("regularizer.r1.gamma=3",),
    "dragan": ("regularizer.dragan.weight=4", "regularizer.dragan.c=0.3"),
    "weight_clip": ("regularizer.weight_clip.clip=0.05",),
    "label_smoothing": ("regularizer.label_smoothing.alpha=0.8",),
    "instance_noise": ("regularizer.instance_noise.std=0.3",),
    "feature_matching": ("regularizer.feature_matching.weight=0.5",),
    "diversity": ("regularizer.diversity.weight=0.3",),
    "ema": ("regularizer.ema.decay=0.95",),
    "historical_averaging": ("regularizer.historical_averaging.weight=0.01",),
    # structure only: D's packs, dropout's masks (each member's own stream), spectral
    # norm's power iterations, layers comparing a member's samples with one another
    "pacgan": (), "dropout": (), "spectral_norm": (), "minibatch_discrimination": (),
    "minibatch_stddev": (),
}


def test_every_regularizer_that_joins_fleets_is_tested_here():
    from ganrun.regularizers import REGULARIZERS

    joining = {name for name in REGULARIZERS if REGULARIZERS[name].joins_fleets}
    assert joining == {*JOINING, "unrolled"}  # unrolled: its own test below


# Historical averaging sums the squares of every weight's distance to its average: the
# stacked sum adds them in another order than the member's own (1e-13 in float64), which
# 100 GAN steps amplify to 1e-7 in its penalty and tip a count of samples near modes.
LOOSER = {"historical_averaging": (1e-6, ("loss/", "D/"))}


@pytest.mark.parametrize("name", sorted(JOINING))
def test_a_regularizer_acts_on_each_member_as_on_its_standalone_run(tmp_path, name):
    common = (*(o for o in EXACT if not o.startswith("train.steps")), "train.steps=100",
              f"regularizer=[{name}]")
    cfgs = _cfgs(common, [MEMBERS[0], (*MEMBERS[1], *JOINING[name])])
    run_fleet(cfgs, [tmp_path / "fleet0", tmp_path / "fleet1"])
    rel, tags = LOOSER.get(name, (1e-9, ("",)))
    for k in (0, 1):
        run(cfgs[k], tmp_path / f"alone{k}")
        assert_same_run(tmp_path / f"fleet{k}", tmp_path / f"alone{k}", rel=rel, tags=tags)


def test_unrolled_members_share_their_optimizer_numbers_and_unroll_their_own_d(tmp_path):
    """Unrolled GAN differentiates through one update rule for the stacked D: members
    differ by seed (and other numbers), not by the optimizer's; a fleet that would mix
    learning rates is refused naming why."""
    common = (*(o for o in EXACT if not o.startswith("train.steps")), "train.steps=60",
              "regularizer=[unrolled]", "regularizer.unrolled.steps=3")
    cfgs = _cfgs(common, [("seed=0",), ("seed=1",)])
    run_fleet(cfgs, [tmp_path / "fleet0", tmp_path / "fleet1"])
    run(cfgs[1], tmp_path / "alone1")
    assert_same_run(tmp_path / "fleet1", tmp_path / "alone1", rel=1e-9)
    from ganrun.errors import UserError

    with pytest.raises(UserError, match=r"differ in structure: optim\.betas=\[0\.5, 0\.999\] and "
                                        r"optim\.betas=\[0\.6, 0\.99\]"):
        run_fleet(_cfgs(common, MEMBERS), [tmp_path / "mixed0", tmp_path / "mixed1"])


def test_a_member_resumed_at_its_budget_trains_no_step_and_one_without_a_checkpoint_fails_alone(
        tmp_path):
    common = ("trainer.accelerator=cpu", "dataset=ring8", "model.hidden_dims=[32,32]",
              "train.ckpt_every=10", "log.every=10", "log.sample_every=10", "metrics=none")
    run_fleet(_cfgs((*common, "train.steps=10"), MEMBERS), [tmp_path / "a0", tmp_path / "a1"])
    run(compose_cfg(*common, "train.steps=20", *MEMBERS[0], f"ckpt_path={tmp_path / 'a0'}")[0],
        tmp_path / "c0")  # member 0 alone to step 20
    before = _stacked_states(tmp_path / "c0")["state_dict"]
    # member 0 resumes at its budget, member 1 at step 10, member 2's checkpoint is gone
    own = [(*MEMBERS[0], f"ckpt_path={tmp_path / 'c0'}"), (*MEMBERS[1], f"ckpt_path={tmp_path / 'a1'}"),
           ("seed=2", f"ckpt_path={tmp_path / 'gone'}")]
    results = run_fleet(_cfgs((*common, "train.steps=20"), own),
                        [tmp_path / "b0", tmp_path / "b1", tmp_path / "b2"])
    assert [(r["status"], r["g_steps"]) for r in results] == [
        ("finished", 20), ("finished", 20), ("failed", 0)]
    assert "ckpt_path=" in results[2]["reason"] and "fleet" not in results[2]
    assert results[1]["fleet"] == {"size": 2, "member": 1, "members": ["b0", "b1"]}
    assert results[0]["images_seen"] == results[1]["images_seen"]
    after = _stacked_states(tmp_path / "c0")["state_dict"]  # member 0 trained no step
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not (tmp_path / "b0" / "checkpoints").exists()


def test_a_regularizer_state_of_its_own_is_each_member_checkpoint_and_resumes(tmp_path):
    """Historical averaging keeps an average of every weight: each member's checkpoint
    holds its own part (its size, its values), and a fleet resumed from them (float64)
    ends where each member's standalone run does."""
    common = (*(o for o in EXACT if not o.startswith("train.steps")),
              "regularizer=[historical_averaging,ema]")
    members = [MEMBERS[0], (*MEMBERS[1], "regularizer.historical_averaging.weight=0.01")]
    half = _cfgs((*common, "train.steps=100"), members)
    run_fleet(half, [tmp_path / "half0", tmp_path / "half1"])
    saved = _stacked_states(tmp_path / "half1")["ganrun"]["regularizers"]
    weights = _stacked_states(tmp_path / "half1")["state_dict"]
    averages = saved["historical_averaging"]["averages"]["D"]
    assert [tuple(a.shape) for a in averages] == [
        tuple(v.shape) for k, v in weights.items() if k.startswith("D.")]
    assert saved["historical_averaging"]["counts"]["D"] == 100
    assert saved["ema"]["updates"] == 100
    resumed = _cfgs((*common, "train.steps=200"),
                    [(*m, f"ckpt_path={tmp_path / f'half{k}'}") for k, m in enumerate(members)])
    run_fleet(resumed, [tmp_path / "fleet0", tmp_path / "fleet1"])
    for k in (0, 1):
        run(_cfgs((*common, "train.steps=200"), members[k:k + 1])[0], tmp_path / f"alone{k}")
        fleet = json.loads((tmp_path / f"fleet{k}" / "metrics.json").read_text())
        alone = json.loads((tmp_path / f"alone{k}" / "metrics.json").read_text())
        _close(fleet["losses"], alone["losses"], 1e-9, ("losses",))
        _close(fleet["metrics"], alone["metrics"], 1e-9, ("metrics",))
