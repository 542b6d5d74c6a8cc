"""The datamodule: in-memory data served as device tensors by index slicing.

No per-sample collation and no worker processes: each batch is one index
into a tensor that already sits on the training device.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch import Tensor

from ganrun.data.sources import Dataset
from ganrun.errors import UserError


class InMemoryBatches:
    """Shuffled batches of `data` (and `labels`), the last partial one dropped.

    Epoch e's order is a permutation drawn from (seed, e) alone, so the stream of
    batches is a function of the seed; `start` skips the first `start` batches of
    it, which is how a resumed run picks up exactly where its checkpoint left off.
    Under DDP, process `rank` of `world` takes every world-th sample of that order:
    each epoch the processes see disjoint shards of the data.
    """

    def __init__(self, data: Tensor, labels: Tensor | None, batch_size: int, seed: int,
                 start: int = 0, rank: int = 0, world: int = 1):
        self.data, self.labels, self.batch_size = data, labels, batch_size
        self.seed, self.start, self.rank, self.world = seed, start, rank, world
        self.epoch = start // len(self)

    def __len__(self) -> int:
        return self.data.shape[0] // self.world // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.data.shape[0], generator=generator)
        order = order[self.rank::self.world].to(self.data.device)
        first = max(self.start - self.epoch * len(self), 0)  # > 0 only in a resumed epoch
        self.epoch += 1
        for i in range(first, len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = self.data[index]
            if batch.dtype == torch.uint8:
                batch = batch.float().div_(127.5).sub_(1.0)
            yield batch if self.labels is None else (batch, self.labels[index])


class GANDataModule(pl.LightningDataModule):
    """Serves `dataset` in batches of `batch_size * n_critic` (one G step's real data,
    per process; `batch_size` counts samples), with their labels or, `with_index`,
    their numbers in the dataset, and keeps a preview of the real points for 2-D scatter plots."""

    PREVIEW = 2000  # real points drawn under the generated ones

    def __init__(self, dataset: Dataset, batch_size: int, n_critic: int, seed: int,
                 with_labels: bool = False, with_index: bool = False):
        super().__init__()
        self.dataset = dataset
        self.batch_size, self.n_critic = batch_size, n_critic
        self.step_batch = batch_size * n_critic
        self.seed = seed
        self.with_labels = with_labels
        self.with_index = with_index  # each sample's number in place of its label (DynGAN)
        self._check_size(1)
        self.preview = None
        if len(dataset.shape) == 1:
            self.preview = dataset.data[torch.randperm(len(dataset))[:self.PREVIEW]]

    def _check_size(self, world: int) -> None:
        if len(self.dataset) // world >= self.step_batch:
            return
        each = f" on each of {world} processes" if world > 1 else ""
        raise UserError(
            f"dataset={self.dataset.name} has {len(self.dataset)} samples, fewer than one "
            f"training step needs{each} (dataset.batch_size={self.batch_size} x "
            f"optim.n_critic={self.n_critic} = {self.step_batch}); lower dataset.batch_size"
            + (" or raise dataset.n_samples" if _sized(self.dataset.name) else ""))

    def train_dataloader(self) -> InMemoryBatches:
        trainer = self.trainer
        device = trainer.strategy.root_device if trainer else torch.device("cpu")
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        self._check_size(world)
        labels = self.dataset.labels.to(device) if self.with_labels else None
        if self.with_index:
            labels = torch.arange(len(self.dataset), device=device)
        # After a checkpoint is restored, the module knows how many batches it has used.
        start = getattr(trainer.lightning_module if trainer else None, "g_steps", 0)
        return InMemoryBatches(self.dataset.data.to(device), labels, self.step_batch,
                               self.seed, start=start, rank=rank, world=world)


def _sized(name: str) -> bool:
    """Whether the dataset `name` draws as many samples as dataset.n_samples says."""
    from dataclasses import fields

    from ganrun.data.sources import DATASETS

    source = DATASETS.get(name)
    return source is not None and any(f.name == "n_samples" for f in fields(source.Config))
