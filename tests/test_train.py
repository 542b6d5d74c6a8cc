"""Training end to end, in-process: outputs, TensorBoard, resume, every option."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from ganrun.training.run import run

from conftest import FAST, compose_cfg
from tbread import hparams, image_steps, scalars

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / group).glob("*.yaml"))
    for group in ("dataset", "model", "loss", "optim", "regularizer", "trainer")
}


def test_a_run_leaves_samples_checkpoint_metrics_and_events(train_fast):
    result, run_dir = train_fast("train.steps=6", "log.every=3", "log.sample_every=3",
                                 "train.ckpt_every=3")
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["status"] == "finished" and saved["g_steps"] == 6
    assert saved["images_seen"] == 6 * 64  # batch 64, one D step per G step
    assert set(saved["losses"]) == {"loss/d", "loss/g", "D/real", "D/fake"}
    assert saved["choices"] == {"dataset": "digits", "model": "mlp", "loss": "nsgan",
                                "optim": "adam", "regularizer": "none", "trainer": "default"}
    assert saved["wall_seconds"] > 0
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    pngs = sorted(p.name for p in (run_dir / "samples").glob("*.png"))
    assert pngs == ["step_0000003.png", "step_0000006.png", "strip.png"]
    grid = np.asarray(Image.open(run_dir / "samples" / "step_0000006.png"))
    assert grid.shape == (8 * 18 + 2, 8 * 18 + 2, 3)  # 64 digits of 16 px, 2 px gaps

    logged = scalars(run_dir / "tb")
    assert [s for s, _ in logged["loss/d"]] == [3, 6]  # x-axis is generator steps
    # The logged value is the mean over the steps since the last log: metrics.json's final
    # losses are the last logged means.
    assert logged["loss/g"][-1][1] == pytest.approx(saved["losses"]["loss/g"], rel=1e-6)
    assert logged["D/real"][-1][1] == pytest.approx(saved["losses"]["D/real"], rel=1e-6)
    assert 0 < logged["D/real"][-1][1] < 1  # a probability for the minimax family
    assert image_steps(run_dir / "tb") == [3, 6]

    values, metrics = hparams(run_dir / "tb")
    assert values["loss"] == "nsgan" and values["optim"] == "adam"
    assert values["dataset"] == "digits" and values["regularizer"] == "none"
    assert values["optim.lr_d"] == pytest.approx(2e-4) and values["train.steps"] == 6
    assert {"loss/d", "loss/g"} <= set(metrics)


def test_penalties_are_logged_by_name(train_fast):
    result, run_dir = train_fast("loss=wgan_gp", "optim.n_critic=2")
    assert result["choices"]["regularizer"] == "gradient_penalty"
    assert result["images_seen"] == 4 * 2 * 64  # two real batches per generator step
    logged = scalars(run_dir / "tb")
    assert "loss/gradient_penalty" in logged
    assert all(v >= 0 for _, v in logged["loss/gradient_penalty"])


def test_wgan_gp_preset_and_command_line_precedence():
    cfg, _ = compose_cfg("loss=wgan_gp", "optim=adam")
    assert cfg.optim.n_critic == 5 and list(cfg.regularizer) == ["gradient_penalty"]
    assert cfg.regularizer.gradient_penalty.weight == 10.0
    cfg, _ = compose_cfg("loss=wgan_gp", "optim.n_critic=2", "regularizer=[spectral_norm]")
    assert cfg.optim.n_critic == 2 and list(cfg.regularizer) == ["spectral_norm"]
    cfg, _ = compose_cfg("loss=wgan")
    assert list(cfg.regularizer) == ["weight_clip"] and cfg.optim.n_critic == 5


def _trains_without_nan(train_fast, *overrides):
    result, run_dir = train_fast(*overrides)
    assert result["status"] == "finished" and result["g_steps"] == 4
    assert all(np.isfinite(v) for v in result["losses"].values())
    return result, run_dir


@pytest.mark.parametrize("option", GROUP_OPTIONS["loss"])
def test_every_loss_trains(train_fast, option):
    _trains_without_nan(train_fast, f"loss={option}", "optim.n_critic=1")


@pytest.mark.parametrize("option", GROUP_OPTIONS["optim"])
def test_every_optimizer_trains(train_fast, option):
    _trains_without_nan(train_fast, f"optim={option}")


@pytest.mark.parametrize("option", GROUP_OPTIONS["regularizer"])
def test_every_regularizer_trains(train_fast, option):
    result, _ = _trains_without_nan(train_fast, f"regularizer=[{option}]")
    assert result["choices"]["regularizer"] == option


@pytest.mark.parametrize("option", GROUP_OPTIONS["model"])
def test_every_model_trains(train_fast, option):
    _trains_without_nan(train_fast, f"model={option}", "dataset.image_size=16")


@pytest.mark.parametrize("option", ["default", "cpu"])
def test_cpu_trainer_options_train(train_fast, option):
    _trains_without_nan(train_fast, f"trainer={option}", "trainer.accelerator=cpu")


@pytest.mark.parametrize("option", GROUP_OPTIONS["dataset"])
def test_every_dataset_trains(train_fast, tv_root, image_root, option):
    root = {"image_folder": image_root}.get(option, tv_root)
    from dataclasses import fields

    from ganrun.data.sources import DATASETS

    embedded = "root" not in {f.name for f in fields(DATASETS[option].Config)}
    extra = [] if embedded or option == "digits" else [f"dataset.root={root}"]
    if option == "image_folder":
        extra += ["dataset.image_size=16", "dataset.batch_size=4"]
    result, run_dir = _trains_without_nan(train_fast, f"dataset={option}", *extra)
    assert (run_dir / "samples" / "step_0000004.png").is_file()


def test_wgan_gp_with_adam_trains_with_spectral_norm_and_dcgan(train_fast):
    _trains_without_nan(train_fast, "loss=wgan_gp", "optim=adam", "model=dcgan",
                        "dataset.image_size=8", "regularizer=[gradient_penalty,spectral_norm]",
                        "optim.n_critic=2")


def test_ring8_samples_are_a_scatter_over_the_real_points(train_fast):
    result, run_dir = train_fast("dataset=ring8")
    picture = np.asarray(Image.open(run_dir / "samples" / "step_0000004.png"))
    assert picture.shape == (384, 384, 3)
    grey = (picture == [170, 170, 170]).all(axis=2).sum()
    blue = (picture == [31, 119, 180]).all(axis=2).sum()
    assert grey > 100 and blue > 100


def test_resume_continues_to_the_requested_generator_step(train_fast):
    first, first_dir = train_fast("train.steps=5", "train.ckpt_every=5", name="first")
    ckpt = first_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["ganrun"]["g_steps"] == 5
    second, second_dir = train_fast(f"ckpt_path={ckpt}", "train.steps=9", "log.every=1",
                                    name="second")
    assert second["g_steps"] == 9 and second["status"] == "finished"
    assert second["images_seen"] == 9 * 64
    logged = scalars(second_dir / "tb")
    assert [s for s, _ in logged["loss/d"]] == [6, 7, 8, 9]  # continues, does not restart
    resumed = torch.load(second_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                         weights_only=False)
    assert resumed["ganrun"]["g_steps"] == 9
    # The generator moved on from the checkpoint it started from.
    key = next(k for k in state["state_dict"] if k.startswith("G."))
    assert not torch.equal(state["state_dict"][key], resumed["state_dict"][key])
    # A run directory stands for its last checkpoint. Already at the budget: nothing
    # more is trained.
    third, _ = train_fast(f"ckpt_path={second_dir}", "train.steps=9", name="third")
    assert third["g_steps"] == 9 and third["images_seen"] == 9 * 64
    fourth, _ = train_fast(f"ckpt_path={second_dir}", "train.steps=10", name="fourth")
    assert fourth["g_steps"] == 10 and fourth["images_seen"] == 10 * 64


def test_missing_checkpoint_is_a_clear_error(train_fast, tmp_path):
    from ganrun.errors import UserError

    with pytest.raises(UserError, match="ckpt_path=.*nope.ckpt: no such file"):
        train_fast(f"ckpt_path={tmp_path / 'nope.ckpt'}")
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["status"] == "failed" and "no such file" in saved["reason"]
    empty = tmp_path / "empty_run"
    empty.mkdir()
    expected = empty / "checkpoints" / "last.ckpt"
    with pytest.raises(UserError, match=f"ckpt_path={empty}: a directory without a checkpoint "
                                        f"\\(expected {expected}\\)"):
        train_fast(f"ckpt_path={empty}")


def test_same_seed_same_losses(train_fast):
    a, _ = train_fast("seed=3", name="a")
    b, _ = train_fast("seed=3", name="b")
    c, _ = train_fast("seed=4", name="c")
    assert a["losses"] == b["losses"]
    assert a["losses"] != c["losses"]


def test_run_is_callable_without_hydra(tmp_path):
    cfg, _ = compose_cfg("train.steps=2", "log.every=1", "trainer.accelerator=cpu")
    result = run(cfg, run_dir=tmp_path / "plain")
    assert result["g_steps"] == 2 and "trainer" not in result["choices"]


# --- every technique, and every loss with every regularizer ---------------------------

SMALL = ("dataset.image_size=8", "dataset.batch_size=16", "model.hidden_dims=[32]",
         "model.latent_dim=8", "train.steps=20", "log.every=20", "log.sample_every=20",
         "train.ckpt_every=20", "optim.n_critic=1")
REFUSED = {  # (loss, regularizer) pairs refused on purpose, with the reason's key words
    (loss, reg): "needs a loss with real/fake targets"
    for loss in ("wgan", "wgan_gp", "hinge", "ragan", "mmd")
    for reg in ("label_smoothing", "label_noise")
}


def _pair_overrides(loss: str, reg: str) -> list[str]:
    # wgan's and wgan_gp's presets add weight_clip / gradient_penalty: keep the pair alone.
    return [*SMALL, f"loss={loss}", f"regularizer=[{reg}]"]


@pytest.mark.parametrize("reg", GROUP_OPTIONS["regularizer"])
@pytest.mark.parametrize("loss", GROUP_OPTIONS["loss"])
def test_every_loss_with_every_regularizer(train_fast, loss, reg):
    from ganrun.errors import UserError

    if (loss, reg) in REFUSED:
        with pytest.raises(UserError, match=REFUSED[loss, reg]):
            train_fast(*_pair_overrides(loss, reg))
        return
    result, _ = train_fast(*_pair_overrides(loss, reg))
    assert result["status"] == "finished" and result["g_steps"] == 20
    assert result["choices"]["regularizer"] == reg
    assert all(np.isfinite(v) for v in result["losses"].values()), result["losses"]


@pytest.mark.parametrize("option", sorted(p.stem for p in (
    Path(__file__).parents[1] / "configs" / "experiment").glob("*.yaml")))
def test_every_experiment_preset_trains(train_fast, option):
    # Sweep presets are trained on one cell each: the cell furthest from the defaults.
    small = {"dcgan_paper": ["model.base_channels=8"], "wgan_paper": ["model.base_channels=8"],
             "wgan_gp_paper": ["model.base_channels=8"],
             "sngan_paper": ["model.g_channels=16", "model.d_channels=16"],
             "optimizer_study": ["model=dcgan", "model.base_channels=8", "optim=sgd"],
             "loss_study": ["loss=mmd"],
             # The mode-collapse presets on their protocols, shortened (sizes are the papers').
             "pacgan_grid": ["method=pacgan4", "dataset.n_samples=2000"],
             "pacgan_ring": ["method=unrolled", "dataset.n_samples=2000"],
             "dyngan_synthetic": ["regularizer.dyngan.detect_every=2",
                                  "regularizer.dyngan.partition_every=4"],
             "unrolled_ring": ["dataset.n_samples=2000", "dataset.batch_size=64"],
             "mode_collapse_study": ["method=dyngan", "protocol=pacgan_ring",
                                     "dataset.n_samples=2000", "regularizer.dyngan.detect_every=2",
                                     "regularizer.dyngan.partition_every=4"]}[option]
    points = option in ("pacgan_grid", "pacgan_ring", "dyngan_synthetic", "unrolled_ring",
                        "mode_collapse_study")
    sizes = ["dataset.batch_size=16"] if points else ["dataset.image_size=16",
                                                       "dataset.batch_size=16"]
    result, _ = _trains_without_nan(train_fast, f"experiment={option}", *sizes, *small)
    assert result["choices"]["experiment"] == option


@pytest.mark.parametrize("model, lr_g, lr_d", [("mlp", 2e-4, 2e-4), ("dcgan", 1e-4, 2e-4)])
def test_optimizer_study_sets_the_papers_learning_rates_for_every_optimizer(model, lr_g, lr_d):
    for optim in ("adam", "rmsprop", "sgd"):
        cfg, _ = compose_cfg("experiment=optimizer_study", f"model={model}", f"optim={optim}")
        assert (cfg.optim.lr_g, cfg.optim.lr_d) == (lr_g, lr_d)
    cfg, _ = compose_cfg("experiment=optimizer_study", f"model={model}", "optim=adam")
    assert cfg.optim.betas[0] == 0.5


def _sweep_cells(option: str) -> int:
    GlobalHydra.instance().clear()
    with initialize_config_module("ganrun.configs", version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={option}"], return_hydra_config=True)
    return math.prod(len(str(v).split(",")) for v in cfg.hydra.sweeper.params.values())


def test_study_presets_sweep_every_cell_over_three_seeds():
    assert _sweep_cells("optimizer_study") == 2 * 3 * 3
    assert _sweep_cells("loss_study") == len(GROUP_OPTIONS["loss"]) * 3
    methods = sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "method").glob("*.yaml"))
    assert methods == ["dyngan", "gan", "pacgan2", "pacgan3", "pacgan4", "unrolled", "wgan_gp"]
    assert _sweep_cells("mode_collapse_study") == 2 * len(methods) * 3


def test_conditional_digits_grid_has_one_row_per_class(train_fast):
    result, run_dir = train_fast("model.conditional=true", "log.n_samples=40")
    grid = np.asarray(Image.open(run_dir / "samples" / "step_0000004.png"))
    assert grid.shape == (10 * 18 + 2, 4 * 18 + 2, 3)  # 10 rows (classes) x 4 columns


def test_conditional_on_unlabelled_data_is_refused(train_fast):
    from ganrun.errors import UserError

    with pytest.raises(UserError, match="model.conditional=true needs class labels; "
                                        "dataset=ring8 has none"):
        train_fast("dataset=ring8", "model.conditional=true")


def test_n_gen_decay_uniform_latent_and_truncation_train(train_fast):
    result, run_dir = train_fast("optim.n_gen=2", "optim.decay=cosine", "sample.latent=uniform",
                                 "sample.truncation=0.5")
    assert result["g_steps"] == 4 and all(np.isfinite(v) for v in result["losses"].values())
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    lr_g = state["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr_g == pytest.approx(2e-4 * 0.5 * (1 + np.cos(np.pi * 4 / 4)), abs=1e-12)
    assert state["lr_schedulers"][0]["last_epoch"] == 4
    # The sample grids' fixed noise is truncated too (uniform on [-0.5, 0.5]).
    from ganrun.callbacks.samples import SampleGrids
    from ganrun.config.schema import validate
    from ganrun.training.run import build

    cfg, choices = compose_cfg(*FAST, "sample.latent=uniform", "sample.truncation=0.5")
    module, trainer, _, _ = build(validate(cfg), run_dir, choices, write=False)
    (grids,) = [c for c in trainer.callbacks if isinstance(c, SampleGrids)]
    grids.setup(trainer, module, "fit")
    assert grids.noise.abs().max() <= 0.5 and grids.noise.abs().max() > 0.4


def test_ema_generator_is_checkpointed_and_used_for_samples(train_fast):
    result, run_dir = train_fast("regularizer=[ema]", "regularizer.ema.decay=0.5")
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    keys = [k for k in state["state_dict"] if k.startswith("G_sampler.")]
    assert keys and all(not torch.equal(state["state_dict"][k], state["state_dict"]["G" + k[len("G_sampler"):]])
                        for k in keys if k.endswith("weight"))


def test_sigmoid_output_trains_on_data_moved_to_unit_range(train_fast):
    result, run_dir = _trains_without_nan(train_fast, "model.out_activation=sigmoid")
    grid = np.asarray(Image.open(run_dir / "samples" / "step_0000004.png"))
    assert grid.std() > 0
