"""The mode count of stacked data (Stacked MNIST, stacked digits: three digits, one per
channel, 1000 modes), as VEEGAN and PacGAN report it: a generated sample's mode is the
three classes a digit classifier reads in its channels; `modes` counts the modes that
hold at least one sample, `kl` is KL(generated mode histogram || uniform over the
modes), in nats. The classifier's per-channel reading is the caller's (its accuracy on
held-out real stacked samples says how far the count can be trusted)."""

from __future__ import annotations

import torch
from torch import Tensor


def stacked_modes(classes: Tensor, digits: int = 10) -> dict[str, float]:
    """`classes` (N, C): each sample's class per channel -> {"modes": covered modes out
    of digits**C, "kl": KL(histogram || uniform)}."""
    n, channels = classes.shape
    total = digits ** channels
    weights = digits ** torch.arange(channels - 1, -1, -1, device=classes.device)
    modes = (classes.long() * weights).sum(1)
    counts = torch.bincount(modes, minlength=total).double()
    p = counts[counts > 0] / n
    kl = float((p * (p * total).log()).sum())
    return {"modes": int((counts > 0).sum()), "kl": kl}
