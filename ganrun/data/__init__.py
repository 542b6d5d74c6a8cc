"""Data sources (digits, 2-D mixtures, torchvision sets, image folders) and the datamodule."""

from ganrun.data.datamodule import GANDataModule, InMemoryBatches
from ganrun.data.sources import DATASETS, Dataset, load_dataset, mixture_centres

__all__ = ["DATASETS", "Dataset", "GANDataModule", "InMemoryBatches", "load_dataset", "mixture_centres"]
