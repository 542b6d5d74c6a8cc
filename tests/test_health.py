"""The health monitor: its rules on constructed evidence, and runs whose failure is
made on purpose (ganrun.callbacks.faults), each named as what it is: mode collapse,
collapse onset, blur, vanishing gradients, oscillation; a healthy run stays silent.
The natural runs (ring8, grid25, DynGAN's grid, digits) are measured by
scripts/bench_health.py."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from test_faults import read_json

from ganrun.callbacks.diagnoses import Episodes, Thresholds, judge_coverage
from ganrun.metrics.modes import mass_on_modes

from conftest import compose_cfg

FIXES = "try regularizer=[dyngan]"
FAULTS = "+callbacks.fault._target_=ganrun.callbacks.faults."
RING = ("dataset=ring8", "train.steps=120", "log.every=10", "metrics.every=20",
        "metrics.names=[modes,pr]", "metrics.n_fake=1000")


def warnings_of(run_dir) -> list[dict]:
    return read_json(run_dir / "metrics.json")["health"]["warnings"]


# --- the evidence and the rules --------------------------------------------------------


def test_mass_on_modes_counts_every_point_for_its_nearest_mode():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
    # 600 points near mode 0, 300 near mode 1 (half of them 5 std away), 100 at mode 2,
    # none at mode 3: a uniform share is 250, 20% of it 50.
    points = np.concatenate([centres[0] + 0.1 * rng.standard_normal((600, 2)),
                             centres[1] + 0.1 * rng.standard_normal((150, 2)),
                             centres[1] + [0.5, 0.0] + 0.0 * rng.standard_normal((150, 2)),
                             centres[2] + 0.1 * rng.standard_normal((100, 2))])
    out = mass_on_modes(torch.tensor(points), torch.tensor(centres), std=0.1)
    nearest = np.linalg.norm(points[:, None] - centres[None], axis=2)
    share = np.bincount(nearest.argmin(1), minlength=4) / len(points)
    assert out["held"] == int((share >= 0.2 / 4).sum()) == 3
    q = share[share > 0]
    assert out["effective"] == pytest.approx(math.exp(-(q * np.log(q)).sum()), rel=1e-12)
    assert out["near"] == pytest.approx((nearest.min(1) <= 0.3).mean(), rel=1e-12)


def modes(held: int, total: int = 8, near: float = 0.95, **extra) -> dict:
    return {"what": "modes", "total": total, "held": held, "effective": float(held),
            "near": near, **extra}


@pytest.mark.parametrize("evidence, best, kind", [
    (modes(8, near=0.036, recall=0.99, collapsed_share=0.52), 0, "blur"),   # the ring8 run
    (modes(1, near=0.99, recall=0.12), 0, "mode_collapse"),                 # one mode
    (modes(2, near=0.05, recall=0.03), 0, "mode_collapse"),                 # a segment
    (modes(16, total=25, near=0.3), 25, "collapse_onset"),                  # a border
    (modes(16, total=25, near=0.3), 16, "mode_collapse"),                   # never held more
    (modes(8, near=0.95, recall=0.97), 8, None),                            # healthy
    (modes(7, near=0.95), 8, None),                                         # one mode missing
    ({"what": "classes", "total": 10, "held": 10, "effective": 9.8, "precision": 0.6,
      "recall": 0.8, "collapsed_share": 0.7}, 10, None),                    # hinge on digits
    ({"what": "classes", "total": 10, "held": 10, "effective": 9.9, "precision": 0.1,
      "recall": 0.9}, 10, "blur"),
    ({"what": "classes", "total": 10, "held": 2, "effective": 1.8, "precision": 0.9}, 0,
     "mode_collapse"),
    ({"precision": 0.8, "recall": 0.05}, 0, "mode_collapse"),               # unlabelled
    ({"precision": 0.1, "recall": 0.9}, 0, "blur"),
    ({"precision": 0.7, "recall": 0.6}, 0, None),
    ({"collapsed_share": 0.9}, 0, None),                                    # nothing to judge
])
def test_rules_tell_collapse_from_blur(evidence, best, kind):
    got, message = judge_coverage(evidence, best, Thresholds(), FIXES)
    assert got == kind, message
    if kind in ("mode_collapse", "collapse_onset"):
        assert FIXES in message
    if kind == "blur":
        assert "not mode collapse" in message and FIXES not in message


def test_the_ring8_blur_message_gives_its_evidence_in_numbers():
    _, message = judge_coverage(modes(8, near=0.036, precision=0.05, recall=0.997), 8,
                                Thresholds(), FIXES)
    assert message.startswith("the samples spread over 8 of 8 modes (effective modes 8) but "
                              "3.6% lie within 3 std of one (precision 0.05, recall 0.997): "
                              "blur between the modes, not mode collapse")


def test_episodes_begin_end_and_begin_again(caplog):
    episodes = Episodes()
    episodes.track("collapse", begin=2, end=2)
    seen = [None, "mode_collapse", "mode_collapse", "mode_collapse", None, None, None,
            "collapse_onset", "collapse_onset"]
    with caplog.at_level(logging.INFO, logger="ganrun"):
        for step, kind in enumerate(seen, start=1):
            episodes.observe("collapse", step, kind, f"message {step}", {"held": step}, "all held")
    assert [(w["kind"], w["step"], w["ended_at"]) for w in episodes.warnings] == [
        ("mode_collapse", 3, 6), ("collapse_onset", 9, None)]
    lines = [r.getMessage() for r in caplog.records]
    assert "health: mode collapse at generator step 3: message 3" in lines
    assert "health: mode collapse (from step 3) recovered at generator step 6: all held" in lines
    assert "health: collapse onset at generator step 9: message 9" in lines
    # A checkpoint's state gives the same episodes back, the open one still open.
    again = Episodes()
    again.track("collapse", begin=2, end=2)
    again.load_state_dict(episodes.state_dict())
    again.observe("collapse", 10, None)
    again.observe("collapse", 11, None)
    assert again.warnings[-1]["ended_at"] == 11


# --- runs with a failure made on purpose --------------------------------------------


@pytest.mark.parametrize("fault, kind, message", [
    ("OneModeG", "mode_collapse", "the samples sit on 1 of 8 modes"),
    ("SegmentG", "mode_collapse", "the samples sit on 2 of 8 modes"),
    ("SpreadG", "blur", "the samples spread over 8 of 8 modes"),
])
def test_a_forced_generator_is_named_at_its_second_evaluation(train_fast, fault, kind, message):
    result, run_dir = train_fast(*RING, FAULTS + fault)
    (warning,) = warnings_of(run_dir)
    assert (warning["kind"], warning["step"], warning["ended_at"]) == (kind, 40, None)
    assert warning["message"].startswith(message)
    assert warning["evidence"]["total"] == 8
    coverage = read_json(run_dir / "metrics.json")["health"]["coverage"]
    assert coverage["state"] == kind and coverage["step"] == 120


def test_a_generator_drawing_the_data_is_healthy_and_collapse_onsets_are_named(train_fast):
    _, healthy = train_fast(*RING, FAULTS + "DataG", name="healthy")
    assert warnings_of(healthy) == []
    assert read_json(healthy / "metrics.json")["health"]["coverage"]["held"] == 8
    # On mode 0 alone in steps [40, 80) and from 100 on (evaluations every 20 steps):
    # an onset named at its second evaluation, recovered at the first good one, and a
    # second episode.
    _, onsets = train_fast(*RING, FAULTS + "DataG", "+callbacks.fault.collapsed=[[40,80],[100,200]]",
                           name="onsets")
    warnings = warnings_of(onsets)
    assert [(w["kind"], w["step"], w["ended_at"]) for w in warnings] == [
        ("collapse_onset", 60, 80), ("collapse_onset", 120, None)]
    assert all(w["message"].startswith("the samples now sit on 1 of 8 modes, down from 8")
               for w in warnings)


def test_a_generator_collapsed_to_one_class_is_reported_though_its_losses_are_finite(train_fast):
    result, run_dir = train_fast("train.steps=40", "log.every=5", "metrics.every=20",
                                 "metrics.n_fake=500", "metrics.names=[class_coverage]",
                                 "+callbacks.collapse._target_=health_helpers.CollapseG")
    assert result["status"] == "finished" and result["metrics"]["classes_covered"] == 1
    (warning,) = [w for w in warnings_of(run_dir) if w["kind"] == "mode_collapse"]
    assert warning["message"].startswith("the samples sit on 1 of 10 classes")
    assert warning["step"] == 40  # at two evaluations in a row: 20 and 40
    assert warning["evidence"]["held"] == 1


def test_without_a_metric_the_detector_says_what_it_cannot_tell_apart(train_fast):
    result, run_dir = train_fast("train.steps=100", "log.every=5", "optim.lr_d=2e-3",
                                 "+callbacks.collapse._target_=health_helpers.CollapseG")
    health = read_json(run_dir / "metrics.json")["health"]
    assert health["collapsed_share"] > 0.5
    (warning,) = health["warnings"]
    assert warning["kind"] == "collapse_or_blur"
    assert "mode collapse and blur between modes both cause" in warning["message"]
    assert "cannot be told apart" in warning["message"]


def test_the_detector_does_not_call_the_first_steps_a_collapse(train_fast):
    # In the first steps D tells every real sample from G's noise: 100% "collapsed" at
    # logs 1 and 2 (experiment=sngan_paper warned at step 2), which is not yet a collapse.
    result, run_dir = train_fast("train.steps=4", "log.every=1", "optim.lr_d=2e-3",
                                 "+callbacks.collapse._target_=health_helpers.CollapseG")
    health = read_json(run_dir / "metrics.json")["health"]
    assert health["collapsed_share"] > 0.5  # the detector does see it ...
    assert health["warnings"] == []  # ... too early


def test_oscillation_is_reported_when_d_keeps_changing_sides(train_fast):
    # G stays one point, so D learns a wide margin; every 20 steps D's head changes sign.
    result, run_dir = train_fast("dataset=ring8", "train.steps=100", "log.every=10",
                                 "optim.lr_d=2e-3", "+callbacks.flip._target_=health_helpers.FlipD",
                                 "+callbacks.flip.every=20",
                                 "+callbacks.collapse._target_=health_helpers.CollapseG")
    (warning,) = [w for w in warnings_of(run_dir) if w["kind"] == "oscillation"]
    assert warning["evidence"]["sign_changes"] >= 3
    assert warning["evidence"]["margin_min"] < 0 < warning["evidence"]["margin_max"]


def test_vanishing_gradients_are_reported_when_d_wins_under_the_saturating_loss(train_fast):
    result, run_dir = train_fast("dataset=ring8", "loss=bce", "optim.lr_d=0.01", "optim.lr_g=1e-6",
                                 "train.steps=200", "log.every=10")
    (warning,) = [w for w in warnings_of(run_dir) if w["kind"] == "vanishing_gradients"]
    evidence = warning["evidence"]
    assert evidence["d_accuracy"] >= 0.99
    assert evidence["grad_norm_g"] * 100 <= evidence["peak_grad_norm_g"]


def test_a_healthy_default_run_is_silent(quick_start):
    """The default run (digits, MLP, nsgan, Adam, 3000 steps: the README's quick start,
    trained once for the session): no warning."""
    result, run_dir, _, _ = quick_start
    health = read_json(run_dir / "metrics.json")["health"]
    assert result["metrics"]["classes_covered"] == 10
    assert health["warnings"] == []
    assert health["coverage"]["state"] == "healthy" and health["coverage"]["held"] == 10
    assert set(health) >= {"collapsed_share", "d_accuracy_real", "d_accuracy_fake",
                           "grad_norm_g", "grad_norm_d"}
    from tbread import scalars

    logged = scalars(run_dir / "tb")
    assert [s for s, _ in logged["health/grad_norm_g"]] == list(range(50, 3001, 50))
    assert [s for s, _ in logged["health/classes_held"]] == [1000, 2000, 3000]


def test_hinge_on_digits_covering_every_class_is_not_called_a_collapse(train_fast):
    # The detector sees 70% "collapsed" under hinge at step 250 while every class is
    # covered: evidence, not a verdict.
    result, run_dir = train_fast("loss=hinge", "train.steps=600", "log.every=50",
                                 "metrics.every=300", "metrics.names=[class_coverage,pr]",
                                 "metrics.n_fake=1000")
    assert result["metrics"]["classes_covered"] == 10
    assert not [w for w in warnings_of(run_dir)
                if w["kind"] in ("mode_collapse", "collapse_onset", "collapse_or_blur")]


@pytest.mark.parametrize("key, value, message", [
    ("collapse_share", 0, "callbacks.health: collapse_share=0: must be finite and in (0, 1]"),
    ("coverage_every", 0, "callbacks.health: coverage_every=0: must be an integer >= 1"),
    ("delta", float("nan"), "callbacks.health: delta=nan: must be finite and > 0"),
])
def test_the_monitor_s_settings_are_range_checked(key, value, message):
    from ganrun.callbacks import build_callbacks
    from ganrun.errors import UserError

    cfg, _ = compose_cfg(f"callbacks.health.{key}={value}")
    with pytest.raises(UserError) as raised:
        build_callbacks(cfg.callbacks)
    assert str(raised.value) == message
