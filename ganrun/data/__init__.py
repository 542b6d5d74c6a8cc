"""Data sources (digits, 2-D mixtures, torchvision sets, image folders) and the datamodule."""

from ganrun.data.datamodule import GANDataModule, InMemoryBatches
from ganrun.data.sources import Dataset, load_dataset, mixture_centres

__all__ = ["Dataset", "GANDataModule", "InMemoryBatches", "load_dataset", "mixture_centres"]
