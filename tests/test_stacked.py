"""Stacked data (1000 modes): stacked_digits and stacked_mnist (on MNIST files in their
real IDX format), the stacked mode count checked against constructed samples whose
mode histogram is known and against numpy / scipy, the classifier's accuracy recorded
with it, and PacGAN's Table 2 and 3 presets composed and trained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import entropy

from ganrun.config.schema import validate
from ganrun.data import load_dataset
from ganrun.errors import UserError
from ganrun.metrics.evaluator import Evaluator
from ganrun.metrics.stacked import stacked_modes

from conftest import compose_cfg, write_idx


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
    assert got["reverse_kl"] == pytest.approx(entropy(counts / counts.sum(),
                                                      np.full(1000, 1e-3)), rel=1e-9, abs=1e-12)
    if kind == "collapsed":
        assert got["modes"] == 1 and got["reverse_kl"] == pytest.approx(np.log(1000))


def _evaluator(*overrides: str) -> tuple[Evaluator, object]:
    cfg = validate(compose_cfg("dataset=stacked_digits", "dataset.n_samples=2000",
                               "metrics.names=[stacked_modes]", *overrides)[0])
    dataset = load_dataset(cfg.dataset)
    return Evaluator(cfg.metrics, dataset, cfg.dataset), cfg


def _well_read_digits(evaluator) -> torch.Tensor:
    """One base digit per class that the classifier reads right, (10, H, W)."""
    metric, base = evaluator.metrics["stacked_modes"], evaluator.dataset.base
    read = metric.read(base.data[:, :1].expand(-1, 3, -1, -1))[:, 0]
    right = read == base.labels
    return torch.stack([base.data[(right & (base.labels == d)).nonzero()[0, 0], 0]
                        for d in range(10)])


@pytest.mark.parametrize("kind", ["all_1000", "ten_modes", "one_mode", "skewed"])
def test_the_stacked_modes_metric_counts_samples_of_a_known_histogram(kind):
    evaluator, _ = _evaluator()
    digit = _well_read_digits(evaluator)
    rng = np.random.default_rng(1)
    if kind == "all_1000":  # every mode equally: KL 0
        modes = np.repeat(np.arange(1000), 3)
    elif kind == "ten_modes":
        modes = np.repeat(rng.choice(1000, 10, replace=False), 30)
    elif kind == "one_mode":
        modes = np.full(200, 271)
    else:  # 300 modes held, unequally
        modes = rng.choice(rng.choice(1000, 300, replace=False), 3000,
                           p=rng.dirichlet(np.ones(300)))
    modes = torch.as_tensor(modes)
    images = torch.stack([digit[modes // 100], digit[modes // 10 % 10], digit[modes % 10]], 1)
    got = evaluator.evaluate(images)
    counts = np.bincount(modes.numpy(), minlength=1000)
    assert got["modes"] == (counts > 0).sum()
    assert got["reverse_kl"] == pytest.approx(entropy(counts / counts.sum(),
                                                      np.full(1000, 1e-3)), abs=1e-9)
    assert set(got) == {"modes", "reverse_kl"}
    picture = evaluator.pictures()["stacked_modes"]  # its histogram, drawn
    assert picture.dtype == np.uint8 and picture.ndim == 3 and picture.shape[2] == 3


def test_the_classifiers_accuracy_on_held_out_stacked_samples_is_recorded():
    """Recomputed here digit by digit: each held-out base digit classified alone, then the
    per-channel accuracy over the held-out stacked draw (seed 1, three per sample)."""
    from ganrun.metrics.extractors import holdout_split
    from ganrun.metrics.stacked import HELD_OUT

    evaluator, cfg = _evaluator()
    record = evaluator.protocol["stacked_modes"]
    metric, base = evaluator.metrics["stacked_modes"], evaluator.dataset.base
    assert record["classifier"] == evaluator.classifier(base).stem
    test, _ = holdout_split(len(base), cfg.metrics.classifier_holdout)
    with torch.no_grad():
        logits = metric.net(base.data[test, :1])[1]
    right = (logits.argmax(1) == base.labels[test]).double()
    index = torch.randint(len(test), (HELD_OUT, 3), generator=torch.Generator().manual_seed(1))
    assert record["accuracy"] == pytest.approx(right[index].mean(0).tolist(), abs=1e-4)
    assert record["mode_accuracy"] == pytest.approx(float(right[index].prod(1).mean()), abs=1e-4)
    assert record["held_out"] == HELD_OUT and min(record["accuracy"]) > 0.9


def test_the_stacked_metric_is_refused_on_other_data():
    cfg = validate(compose_cfg("dataset=digits", "metrics.names=[stacked_modes]")[0])
    with pytest.raises(UserError, match=r"stacked_modes for stacked data \(stacked_digits, "
                                        r"stacked_mnist\)"):
        Evaluator(cfg.metrics, load_dataset(cfg.dataset), cfg.dataset)


# --- stacked MNIST on MNIST's own files -----------------------------------------------


def digits_as_mnist(root, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """MNIST's four IDX files under root/MNIST/raw, holding scikit-learn's digits
    enlarged to 28x28 (real digits, so a classifier learns them)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.tensor(digits.images[:n], dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(small, size=(28, 28), mode="bilinear")
    images = (big[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    labels = digits.target[:n].astype(np.uint8)
    raw = root / "MNIST" / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:10])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:10])
    return images, labels


def test_stacked_mnist_stacks_mnist_files_and_counts_their_modes(tmp_path):
    root = tmp_path / "data"
    images, labels = digits_as_mnist(root)
    cfg = validate(compose_cfg("dataset=stacked_mnist", f"dataset.root={root}",
                               "dataset.image_size=28", "dataset.n_samples=3000",
                               "metrics.names=[stacked_modes]", "metrics.classifier_steps=150")[0])
    data = load_dataset(cfg.dataset)
    assert data.data.dtype == torch.uint8 and tuple(data.data.shape) == (3000, 3, 28, 28)
    assert data.base.name == "mnist" and len(data.base) == len(images)
    flat = torch.as_tensor(images).flatten(1)
    for i in range(10):  # each channel one of the files' images, of the class the label says
        mode = int(data.labels[i])
        for c, cls in enumerate((mode // 100, mode // 10 % 10, mode % 10)):
            same = (flat == data.data[i, c].flatten()).all(1).nonzero()[:, 0].numpy()
            assert len(same) and set(labels[same]) == {cls}
    # its classifier is MNIST's (trained and cached), and real stacked samples read as
    # their own modes, up to the classifier's recorded accuracy
    evaluator = Evaluator(cfg.metrics, data, cfg.dataset)
    record = evaluator.protocol["stacked_modes"]
    assert record["classifier"].startswith("mnist-")
    real = data.data[:2000].float().div(127.5).sub(1)
    got = evaluator.evaluate(real)
    held = len(set(data.labels[:2000].tolist()))
    assert abs(got["modes"] - held) <= (1 - record["mode_accuracy"]) * 2000 + 5


def test_stacked_mnist_without_its_files_names_the_path(tmp_path):
    cfg = validate(compose_cfg("dataset=stacked_mnist", f"dataset.root={tmp_path}")[0])
    with pytest.raises(UserError, match=r"dataset=stacked_mnist: could not load MNIST from "
                                        r"dataset.root=.*MNIST/raw/train-images-idx3-ubyte"):
        load_dataset(cfg.dataset)


# --- PacGAN's presets -----------------------------------------------------------------


def _conv_widths(net) -> list[int]:
    return [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("protocol, method, extra, widths_d, latent", [
    ("pacgan_stacked", "pacgan2", (), [64, 128], 100),
    ("pacgan_stacked_small_d", "gan", (), [4, 8], 256),
    ("pacgan_stacked_small_d", "unrolled", ("model.base_channels_d=8",), [8, 16], 256),
    ("pacgan_stacked_small_d", "dyngan", (), [4, 8], 256),
])
def test_pacgans_stacked_presets_compose_and_train(train_fast, protocol, method, extra, widths_d,
                                                   latent):
    from ganrun.training.module import GANModule

    overrides = (f"protocol={protocol}", f"method={method}", "metrics=default",
                 "metrics.names=[stacked_modes]", "metrics.n_fake=600", "metrics.every=4",
                 *extra)
    cfg = validate(compose_cfg(*overrides)[0])
    module = GANModule(cfg, (3, 16, 16))
    assert _conv_widths(module.D) == widths_d and module.latent_dim == latent
    assert cfg.dataset.name == "stacked_digits" and cfg.metrics.names == ["stacked_modes"]
    if protocol == "pacgan_stacked_small_d":
        assert (cfg.optim.lr_g, cfg.optim.lr_d, list(cfg.optim.betas)) == (1e-4, 2e-4, [0.5, 0.99])
        assert cfg.dataset.batch_size == 128 and cfg.sample.latent == "normal"
    else:
        assert cfg.optim.n_gen == 2 and cfg.sample.latent == "uniform"
        assert cfg.dataset.batch_size == 64
    result, run_dir = train_fast(*overrides)
    assert result["status"] == "finished"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    last = records[-1]
    assert last["n_fake"] == 600 and 1 <= last["metrics"]["modes"] <= 600
    assert len(last["stacked_modes"]["accuracy"]) == 3
    assert (run_dir / "samples" / "stacked_modes_step_0000004.png").is_file()


def test_the_table_2_preset_keeps_the_papers_numbers():
    cfg = validate(compose_cfg("protocol=pacgan_stacked")[0])
    assert (cfg.metrics.n_fake, cfg.train.steps, cfg.dataset.batch_size) == (26000, 100000, 64)
    cfg = validate(compose_cfg("protocol=pacgan_stacked_small_d", "dataset=stacked_mnist")[0])
    assert cfg.dataset.name == "stacked_mnist" and cfg.metrics.n_fake == 25600
