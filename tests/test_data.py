"""Data sources: the embedded sets, torchvision's formats and image folders."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from ganrun.data import GANDataModule, InMemoryBatches, load_dataset, mixture_centres
from ganrun.errors import UserError

from conftest import make_cifar10, make_image_folder, make_mnist


def ds(**kw):
    return OmegaConf.create(kw)


def test_digits_are_scaled_resized_and_labelled():
    from sklearn.datasets import load_digits

    d = load_digits()
    data = load_dataset(ds(name="digits", image_size=8, channels=1))
    assert data.data.shape == (1797, 1, 8, 8)
    # 8 px keeps the pixels: 0..16 maps linearly onto [-1, 1].
    expected = torch.tensor(d.images, dtype=torch.float32) / 8.0 - 1.0
    assert torch.allclose(data.data[:, 0], expected)
    assert torch.equal(data.labels, torch.tensor(d.target))
    big = load_dataset(ds(name="digits", image_size=32, channels=3))
    assert big.data.shape == (1797, 3, 32, 32)
    assert big.data.min() >= -1 and big.data.max() <= 1
    assert torch.equal(big.data[:, 0], big.data[:, 2])
    # Upsampling preserves the image mean up to edge effects.
    assert abs(big.data.mean().item() - data.data.mean().item()) < 0.05


@pytest.mark.parametrize("name,modes", [("ring8", 8), ("grid25", 25)])
def test_mixture_points_sit_on_their_modes(name, modes):
    cfg = ds(name=name, n_samples=4000, radius=2.0, spacing=2.0, std=0.02)
    data = load_dataset(cfg)
    centres = mixture_centres(cfg)
    assert centres.shape == (modes, 2)
    if name == "ring8":
        assert torch.allclose(centres.norm(dim=1), torch.full((8,), 2.0))
    offsets = data.data - centres[data.labels]
    assert abs(offsets.std().item() - 0.02) < 0.002
    assert torch.bincount(data.labels, minlength=modes).min() > 4000 / modes * 0.7
    # Drawn with a fixed seed: every run sees the same points.
    assert torch.equal(load_dataset(cfg).data, data.data)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_reads_idx_files(tmp_path, name, folder):
    images, labels = make_mnist(tmp_path, folder, n=40)
    data = load_dataset(ds(name=name, root=str(tmp_path), download=False, image_size=28, channels=1))
    assert data.data.dtype == torch.uint8 and data.data.shape == (40, 1, 28, 28)
    assert np.array_equal(data.data[:, 0].numpy(), images)
    assert np.array_equal(data.labels.numpy(), labels)
    resized = load_dataset(ds(name=name, root=str(tmp_path), download=False, image_size=32, channels=3))
    assert resized.data.shape == (40, 3, 32, 32)


def test_cifar10_reads_the_python_pickles(tmp_path):
    images, labels = make_cifar10(tmp_path, n_per_batch=6)
    data = load_dataset(ds(name="cifar10", root=str(tmp_path), download=False, image_size=32, channels=3))
    assert data.data.shape == (30, 3, 32, 32)
    assert np.array_equal(data.data.numpy(), images)
    assert data.labels.tolist() == labels
    gray = load_dataset(ds(name="cifar10", root=str(tmp_path), download=False, image_size=16, channels=1))
    assert gray.data.shape == (30, 1, 16, 16)


def test_missing_torchvision_data_names_the_way_out(tmp_path):
    with pytest.raises(UserError) as e:
        load_dataset(ds(name="mnist", root=str(tmp_path / "nowhere"), download=False,
                        image_size=32, channels=1))
    message = str(e.value)
    assert "dataset=mnist" in message and "dataset.download=true" in message
    assert "MNIST/raw/train-images-idx3-ubyte" in message


def test_image_folder_is_searched_recursively_and_modes_converted(tmp_path):
    paths = make_image_folder(tmp_path / "imgs", n=12, size=(40, 30))
    rgb = load_dataset(ds(name="image_folder", root=str(tmp_path / "imgs"), image_size=16, channels=3))
    assert rgb.data.shape == (12, 3, 16, 16) and rgb.data.dtype == torch.uint8
    gray = load_dataset(ds(name="image_folder", root=str(tmp_path / "imgs"), image_size=8, channels=1))
    assert gray.data.shape == (12, 1, 8, 8)
    assert any(p.parent.name == "deep" for p in paths)


def test_image_folder_centre_crops_the_short_side(tmp_path):
    from PIL import Image

    array = np.zeros((20, 60, 3), dtype=np.uint8)   # wide: left third red, middle green
    array[:, :20, 0] = 255
    array[:, 20:40, 1] = 255
    (tmp_path / "one").mkdir()
    Image.fromarray(array).save(tmp_path / "one" / "x.png")
    data = load_dataset(ds(name="image_folder", root=str(tmp_path / "one"), image_size=20, channels=3))
    img = data.data[0]
    assert img[1].float().mean() > 250 and img[0].float().mean() < 5  # only the middle survives


def test_image_folder_skips_unreadable_files_with_one_warning(tmp_path, caplog):
    root = tmp_path / "mixed"
    make_image_folder(root, n=6)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    good = (root / "b").glob("*.png").__next__().read_bytes()
    (root / "truncated.png").write_bytes(good[: len(good) // 2])
    with caplog.at_level("WARNING"):
        data = load_dataset(ds(name="image_folder", root=str(root), image_size=8, channels=3))
    assert len(data) == 6
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 2 of 8 files" in warnings[0]


def test_image_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no such folder"):
        load_dataset(ds(name="image_folder", root=str(tmp_path / "absent"), image_size=8, channels=3))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images found"):
        load_dataset(ds(name="image_folder", root=str(tmp_path / "empty"), image_size=8, channels=3))


def test_batches_are_index_slices_covering_each_epoch_once():
    data = torch.arange(100, dtype=torch.float32).view(100, 1)
    labels = torch.arange(100)
    batches = InMemoryBatches(data, labels, batch_size=32, seed=0)
    assert len(batches) == 3
    seen = torch.cat([x for x, _ in batches]).view(-1)
    assert seen.numel() == 96 and seen.unique().numel() == 96
    for x, y in batches:
        assert torch.equal(x.view(-1).long(), y)  # labels travel with their samples
    uint8 = InMemoryBatches(torch.tensor([[0], [255]], dtype=torch.uint8), None, 2, seed=0)
    assert sorted(next(iter(uint8)).view(-1).tolist()) == [-1.0, 1.0]


def test_batches_started_part_way_continue_the_same_stream():
    data = torch.arange(100, dtype=torch.float32).view(100, 1)

    def stream(start: int, epochs: int) -> list[list[float]]:
        batches = InMemoryBatches(data, None, batch_size=32, seed=7, start=start)
        return [b.view(-1).tolist() for _ in range(epochs) for b in batches]

    whole = stream(0, 4)  # 4 epochs of 3 batches
    assert whole[:3] != whole[3:6]  # each epoch its own order
    for start in (1, 3, 5, 7):
        assert stream(start, 4 - start // 3)[:12 - start] == whole[start:]


def test_dataset_smaller_than_one_step_is_refused():
    data = load_dataset(ds(name="digits", image_size=8, channels=1))
    with pytest.raises(UserError, match=r"1797 samples, fewer than one training step needs .*"
                                         r"batch_size=400 x optim.n_critic=5 = 2000"):
        GANDataModule(data, batch_size=400, n_critic=5, seed=0)
    assert math.isfinite(len(data))
