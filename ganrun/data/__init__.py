"""Data sources (digits, 2-D mixtures, torchvision sets, image folders, stacked digits)
and the datamodule (imported when first asked for: it needs Lightning, which checking a
config does not)."""

from ganrun.data import stacked  # noqa: F401 - registers stacked_digits, stacked_mnist
from ganrun.data.sources import DATASETS, Dataset, load_dataset, mixture_centres

__all__ = ["DATASETS", "Dataset", "GANDataModule", "InMemoryBatches", "load_dataset", "mixture_centres"]


def __getattr__(name: str):
    if name in ("GANDataModule", "InMemoryBatches"):
        from ganrun.data import datamodule

        return getattr(datamodule, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
