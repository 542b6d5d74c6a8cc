"""The core (ganrun/training, ganrun/callbacks) as the pieces see it: step statistics
reported and read by name, callbacks that declare what they need, and regularizers
that drive the core through declared traits (labels, samples per decision, the
network that samples, their section of metrics.json) without being named there."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from ganrun.config.schema import validate
from ganrun.errors import UserError
from ganrun.regularizers import REGULARIZERS, Regularizer, samples_per_decision, supplies_labels
from ganrun.stepstats import StepStatistics

from conftest import FAST, compose_cfg

# --- named step statistics ----------------------------------------------------------------


def test_step_statistics_are_means_by_name_whatever_each_step_reports():
    stats = StepStatistics()
    steps = [{"loss/d": 1.0, "loss/g": 4.0}, {"loss/d": 3.0, "loss/g": 2.0},
             {"loss/g": 6.0, "loss/extra": 5.0, "loss/d": 2.0}]  # another set, another order
    for values in steps:
        for name, value in values.items():
            stats.report(name, torch.tensor(value))
        stats.end_step()
    stats.note("health/x", torch.tensor(7.0))
    assert stats.steps == 3
    means = stats.read()
    expected = {name: sum(s[name] for s in steps if name in s) / sum(name in s for s in steps)
                for name in ("loss/d", "loss/g", "loss/extra")}
    assert means == pytest.approx({**expected, "health/x": 7.0})
    assert stats.steps == 0 and stats.read() == {}


def test_step_statistics_average_a_name_reported_twice_in_a_step_and_reduce_once():
    stats = StepStatistics()
    stats.report("loss/g", torch.tensor(1.0))
    stats.report("loss/g", torch.tensor(2.0))
    stats.end_step()
    stats.report("loss/g", torch.tensor(4.0))
    stats.end_step()
    calls = []

    def reduce(t: Tensor) -> Tensor:
        calls.append(t.clone())
        return t * 10

    assert stats.read(reduce) == {"loss/g": pytest.approx(10 * (1.5 + 4.0) / 2)}
    assert len(calls) == 1 and calls[0].shape == (1,)


def test_step_statistics_tell_a_non_finite_value():
    stats = StepStatistics()
    stats.report("loss/d", torch.tensor(1.0))
    stats.end_step()
    assert stats.all_finite()
    stats.report("loss/d", torch.tensor(math.nan))
    stats.end_step()
    assert not stats.all_finite()
    names, means = stats.stacked()
    assert names == ["loss/d"] and math.isnan(means[0].item())


# --- callbacks declare what they need -------------------------------------------------------


def test_removing_a_callback_another_needs_is_refused_in_one_line():
    cfg, _ = compose_cfg(*FAST, "~callbacks.step_stats")
    with pytest.raises(UserError) as info:
        validate(cfg)
    assert str(info.value) == (
        "callbacks.health (HealthMonitor) needs callbacks.step_stats (StepStats), which this "
        "configuration removes: keep it, or remove callbacks.health too (~callbacks.health)")


def test_without_step_statistics_and_health_a_run_still_trains(train_fast):
    result, run_dir = train_fast("~callbacks.step_stats", "~callbacks.health")
    assert result["status"] == "finished" and result["g_steps"] == 4
    assert result["losses"] == {} and "health" not in result


# --- traits: the core asks every regularizer, names none ------------------------------------


@dataclass
class _NoSettings:
    pass


class Halves(Regularizer):
    """A source of labels of its own: real sample i is class i % 2, generated samples
    alternate. The core must condition G and D on it, feed it the batches' sample
    numbers, and write its summary, knowing nothing of it."""

    name = "halves"
    conditions = 2
    Config = _NoSettings

    def __init__(self):
        self.asked = 0

    def real_labels(self, index: Tensor) -> Tensor:
        self.asked += 1
        return index % 2

    def sample_labels(self, n: int, generator=None) -> Tensor:
        return torch.arange(n) % 2

    def summary(self) -> dict:
        return {"batches_labelled": self.asked}


@pytest.fixture
def halves(tmp_path):
    REGULARIZERS.register(Halves)
    folder = tmp_path / "configs" / "regularizer"
    folder.mkdir(parents=True)
    (folder / "halves.yaml").write_text("# @package regularizer.halves\n{}\n")
    try:
        yield f"hydra.searchpath=[file://{tmp_path / 'configs'}]"
    finally:
        REGULARIZERS.pop("halves", None)


def test_a_regularizer_with_labels_of_its_own_conditions_the_run(halves, train_fast):
    from ganrun.cli.tools import load_module

    cfg = validate(compose_cfg(*FAST, halves, "regularizer=[halves]")[0])
    assert supplies_labels(cfg.regularizer) and samples_per_decision(cfg.regularizer) == 1
    result, run_dir = train_fast(halves, "regularizer=[halves]")
    assert result["status"] == "finished"
    # Asked for the real batch of each of the 4 generator steps (n_critic 1), and by the
    # health monitor for its watched samples at each of the 2 logs (log.every=2).
    assert result["halves"] == {"batches_labelled": 4 + 2}
    module, _ = load_module(run_dir / "checkpoints" / "last.ckpt")
    assert module.num_classes == 2 and module.labeller.name == "halves"
    assert module.G.embed.num_embeddings == 2


def test_samples_per_decision_is_read_from_the_declaring_key():
    cfg = validate(compose_cfg(*FAST, "regularizer=[pacgan]", "regularizer.pacgan.pack=3")[0])
    assert samples_per_decision(cfg.regularizer) == 3
    assert samples_per_decision(validate(compose_cfg(*FAST)[0]).regularizer) == 1


def test_a_checkpoint_that_names_the_sampler_the_old_way_resumes(train_fast, tmp_path):
    """ganrun <= 0.2 saved the averaged generator as `G_ema.*`; such a checkpoint resumes
    and its averaged weights are the ones restored."""
    _, run_dir = train_fast("regularizer=[ema]", "regularizer.ema.decay=0.5")
    path = run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = {k.replace("G_sampler.", "G_ema.", 1): v for k, v in state["state_dict"].items()}
    state["state_dict"] = saved
    old = tmp_path / "old.ckpt"
    torch.save(state, old)
    result, resumed = train_fast("regularizer=[ema]", "regularizer.ema.decay=0.5",
                                 "train.steps=6", f"ckpt_path={old}", name="resumed")
    assert result["status"] == "finished" and result["g_steps"] == 6
    from ganrun.cli.tools import load_module

    module, _ = load_module(old)  # the tools read it too
    first = next(k for k in saved if k.startswith("G_ema.") and k.endswith("weight"))
    assert torch.equal(module.G_sampler.state_dict()[first.removeprefix("G_ema.")], saved[first])
