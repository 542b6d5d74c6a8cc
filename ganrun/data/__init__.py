"""Data sources (digits, 2-D mixtures, torchvision sets, image folders, stacked digits)
and the datamodule."""

from ganrun.data import stacked  # noqa: F401 - registers stacked_digits, stacked_mnist
from ganrun.data.datamodule import GANDataModule, InMemoryBatches
from ganrun.data.sources import DATASETS, Dataset, load_dataset, mixture_centres

__all__ = ["DATASETS", "Dataset", "GANDataModule", "InMemoryBatches", "load_dataset", "mixture_centres"]
