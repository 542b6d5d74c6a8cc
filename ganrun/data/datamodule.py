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
    """

    def __init__(self, data: Tensor, labels: Tensor | None, batch_size: int, seed: int,
                 start: int = 0):
        self.data, self.labels, self.batch_size = data, labels, batch_size
        self.seed, self.start = seed, start
        self.epoch = start // len(self)

    def __len__(self) -> int:
        return self.data.shape[0] // self.batch_size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.data.shape[0], generator=generator).to(self.data.device)
        first = max(self.start - self.epoch * len(self), 0)  # > 0 only in a resumed epoch
        self.epoch += 1
        for i in range(first, len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            batch = self.data[index]
            if batch.dtype == torch.uint8:
                batch = batch.float().div_(127.5).sub_(1.0)
            yield batch if self.labels is None else (batch, self.labels[index])


class GANDataModule(pl.LightningDataModule):
    """Serves `dataset` in batches of `batch_size * n_critic`: one G step's real data."""

    def __init__(self, dataset: Dataset, batch_size: int, n_critic: int, seed: int,
                 with_labels: bool = False):
        super().__init__()
        self.dataset = dataset
        self.step_batch = batch_size * n_critic
        self.seed = seed
        self.with_labels = with_labels
        if len(dataset) < self.step_batch:
            raise UserError(
                f"dataset={dataset.name} has {len(dataset)} samples, fewer than one training "
                f"step needs (dataset.batch_size={batch_size} x optim.n_critic={n_critic} = "
                f"{self.step_batch}); lower dataset.batch_size"
            )

    def train_dataloader(self) -> InMemoryBatches:
        device = self.trainer.strategy.root_device if self.trainer else torch.device("cpu")
        rank = self.trainer.global_rank if self.trainer else 0
        labels = self.dataset.labels.to(device) if self.with_labels else None
        # After a checkpoint is restored, the module knows how many batches it has used.
        module = self.trainer.lightning_module if self.trainer else None
        start = getattr(module, "g_steps", 0)
        return InMemoryBatches(self.dataset.data.to(device), labels, self.step_batch,
                               self.seed + rank, start=start)
