"""Shared fixtures: compose the shipped configs, and write small datasets in the
real on-disk formats (MNIST IDX files, CIFAR-10 pickles, image folders)."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist's workers share the cores, each with torch's own thread count (the
    # README's figures are those of two threads: another count sums in another order).
    # OpenMP's idle threads then sleep rather than spin against the other worker's (a
    # fleet test: 163 s alone, far longer on two spinning workers).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ganrun.config.compose import compose_config as compose_cfg  # also registers ganrun_safe_name

REPO = Path(__file__).resolve().parents[1]
GANRUN = str(Path(sys.executable).with_name("ganrun"))
__all__ = ["compose_cfg"]

FAST = ("train.steps=4", "train.ckpt_every=4", "log.every=2", "log.sample_every=4",
        "trainer.accelerator=cpu", "metrics=none")


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A directory every pytest-xdist worker of this session sees (their base temporary
    directories' parent), or this process's own without xdist."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def ganrun_cache(tmp_path_factory):
    """Classifiers and real-data statistics go to a temporary cache, shared by the
    session's workers as ganrun's cache is shared by processes (each classifier is then
    trained once, not once a worker)."""
    cache = shared_dir(tmp_path_factory, "ganrun-cache")
    os.environ["GANRUN_CACHE"] = str(cache)
    return cache


@pytest.fixture(scope="session")
def quick_start(tmp_path_factory):
    """The README's `ganrun` with no options (test_readme): 3000 steps, metrics at 1000,
    2000, 3000 (~70 s on two busy cores), trained once for the session, whichever worker
    asks first (the others wait for it and read what it left): test_readme compares its
    lines, test_health reads its health. (result, run_dir, console lines, whether the
    digits classifier was trained by it)."""
    from filelock import FileLock  # torch's own dependency
    from test_readme import find, overrides_of, run_in_process, stamp

    root = shared_dir(tmp_path_factory, "quick")
    kept = root / "quick_start.pickle"
    with FileLock(str(root / "quick_start.lock")):
        if not kept.is_file():
            run_dir = root / "outputs" / "runs" / stamp()
            (overrides,) = overrides_of(find(r"^ganrun$"))
            result, lines = run_in_process(overrides, run_dir)
            kept.write_bytes(pickle.dumps((result, run_dir, lines)))
        result, run_dir, lines = pickle.loads(kept.read_bytes())
    cold = any("metrics: training the" in line for line in lines)
    return result, run_dir, lines, cold


def at_the_end(overrides) -> tuple[str, ...]:
    """FAST samples and saves every 4 steps, for 4-step runs; a longer one (train.steps=N)
    does both at its end only, unless the test says when (a PNG and a checkpoint every 4
    steps cost most of a 600-step test)."""
    steps = [int(o.split("=")[1]) for o in overrides if o.startswith("train.steps=")]
    if not steps or steps[-1] <= 4:
        return ()
    given = {o.split("=")[0] for o in overrides}
    return tuple(f"{key}={steps[-1]}" for key in ("log.sample_every", "train.ckpt_every")
                 if key not in given)


@pytest.fixture
def train_fast(tmp_path):
    """Run a few generator steps in-process; returns (result, run_dir)."""
    from ganrun.training.run import run

    def _run(*overrides: str, name: str = "run"):
        cfg, choices = compose_cfg(*FAST, *overrides, *at_the_end(overrides))
        run_dir = tmp_path / name
        return run(cfg, run_dir=run_dir, hydra_choices=choices), run_dir

    return _run


# --- datasets in their real formats --------------------------------------------------


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """An IDX file as MNIST ships it: magic (0, 0, 0x08 = ubyte, ndim), sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def make_mnist(root: Path, folder: str = "MNIST", n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """train/t10k image and label IDX files under root/<folder>/raw; returns train images, labels."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
    raw = root / folder / "raw"
    write_idx(raw / "train-images-idx3-ubyte", images)
    write_idx(raw / "train-labels-idx1-ubyte", labels)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:16])
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:16])
    return images, labels


def make_cifar10(root: Path, n_per_batch: int = 20, seed: int = 0) -> tuple[np.ndarray, list]:
    """cifar-10-batches-py/ with the five training pickles, test_batch and batches.meta,
    in the layout of the real archive (rows of 3072 uint8, channel-major)."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    all_images, all_labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n_per_batch,)).tolist()
        with open(folder / name, "wb") as f:
            pickle.dump({"data": rows, "labels": labels, "batch_label": name}, f)
        if name != "test_batch":
            all_images.append(rows.reshape(-1, 3, 32, 32))
            all_labels += labels
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_per_batch}, f)
    return np.concatenate(all_images), all_labels


def make_image_folder(root: Path, n: int = 12, size: tuple[int, int] = (40, 30), seed: int = 0) -> list[Path]:
    """PNG and JPEG images of mixed modes in nested folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = root / ("a" if i % 2 else "b") / ("deep" if i % 3 == 0 else "")
        sub.mkdir(parents=True, exist_ok=True)
        array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        img = Image.fromarray(array)
        mode = ("RGB", "L", "RGBA", "P")[i % 4]
        img = img.convert(mode)
        ext = ".jpg" if mode in ("RGB", "L") and i % 5 == 0 else ".png"
        path = sub / f"img_{i:03d}{ext}"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def tv_root(tmp_path):
    """A dataset.root holding fixture MNIST, FashionMNIST and CIFAR-10."""
    root = tmp_path / "data"
    make_mnist(root, "MNIST")
    make_mnist(root, "FashionMNIST", seed=1)
    make_cifar10(root)
    return root


@pytest.fixture
def image_root(tmp_path):
    root = tmp_path / "images"
    make_image_folder(root)
    return root


def cli_env() -> dict:
    env = dict(os.environ)
    env.pop("HYDRA_FULL_ERROR", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env
