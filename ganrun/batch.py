"""What a training step's batch holds: one run's samples or, in a fleet
(ganrun.fleet), M runs' samples one block after another (member k's at rows
k*B..(k+1)*B). Code of the step that reduces over the batch or draws a random value
per sample goes through these helpers, so that it means the same in both: a mean is
each run's own mean ((M,) in a fleet), a draw comes from each run's own random
stream (the one its standalone run would use), and a number a member has of its own
(a penalty's weight: a tensor (M,) in a fleet) is applied to that member's rows.

Outside a fleet's step the helpers are the plain torch calls.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

_streams: list[torch.Generator] | None = None  # the members' streams during a fleet's step


@contextlib.contextmanager
def members(streams: list[torch.Generator]):
    """The block is a fleet's step: its batch holds len(streams) members' samples."""
    global _streams
    previous, _streams = _streams, streams
    try:
        yield
    finally:
        _streams = previous


def runs() -> int:
    """How many runs the batch holds."""
    return 1 if _streams is None else len(_streams)


def mean(t: Tensor) -> Tensor:
    """Each run's mean of a per-sample value: a scalar, or (M,) in a fleet."""
    return t.mean() if _streams is None else t.reshape(len(_streams), -1).mean(1)


def std(t: Tensor) -> Tensor:
    """Each run's standard deviation over all of its values, shaped to scale its rows."""
    if _streams is None:
        return t.std()
    m = len(_streams)
    return rows(t.reshape(m, -1).std(1), t)


def mean_rows(t: Tensor) -> Tensor:
    """Each run's mean over its samples of a per-sample feature (N, F...): (F...), or
    (M, F...) in a fleet."""
    if _streams is None:
        return t.mean(0)
    return t.reshape(len(_streams), -1, *t.shape[1:]).mean(1)


def total(t: Tensor) -> Tensor:
    """Each run's sum of all its values of `t` (a fleet's: its first dimension holds the
    members, (M, ...), or their samples, (M * B, ...)): a scalar, or (M,)."""
    return t.sum() if _streams is None else t.reshape(len(_streams), -1).sum(1)


def halves(t: Tensor) -> tuple[Tensor, Tensor]:
    """Each run's samples split in two halves (a fleet's: each member's own, the
    members' first halves one block after another, and their second)."""
    if _streams is None:
        half = t.shape[0] // 2
        return t[:half], t[half:2 * half]
    m = len(_streams)
    rows_ = t.reshape(m, -1, *t.shape[1:])
    half = rows_.shape[1] // 2
    return (rows_[:, :half].reshape(-1, *t.shape[1:]),
            rows_[:, half:2 * half].reshape(-1, *t.shape[1:]))


def rows(value: float | Tensor, like: Tensor) -> float | Tensor:
    """A number per run as a factor of `like`'s rows: a plain number as it is; a
    member's own ((M,) tensor) repeated over its rows and broadcast over the rest."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    per_row = value.to(like).repeat_interleave(like.shape[0] // value.shape[0])
    return per_row.view(-1, *([1] * (like.dim() - 1)))


def per_member(value: float | Tensor, stacked: Tensor) -> float | Tensor:
    """A number per run as a factor of a stacked parameter (M, ...) of a fleet's network."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    return value.to(stacked).view(-1, *([1] * (stacked.dim() - 1)))


def _draw(fn, n: int, shape: tuple[int, ...], like: Tensor) -> Tensor:
    if _streams is None:
        return fn(n, *shape, device=like.device, dtype=like.dtype)
    b = n // len(_streams)
    return torch.cat([fn(b, *shape, generator=g, dtype=like.dtype) for g in _streams]).to(
        like.device)


def rand(n: int, like: Tensor) -> Tensor:
    """n uniform values, one per sample (each run's from its own stream)."""
    return _draw(torch.rand, n, (), like)


def bernoulli_like(x: Tensor, p: float) -> Tensor:
    """1 with probability p, per value of x (each run's from its own stream), drawn as
    torch's dropout draws its mask."""
    if _streams is None:
        return torch.empty_like(x).bernoulli_(p)
    b = x.shape[0] // len(_streams)
    return torch.cat([torch.empty(b, *x.shape[1:], dtype=x.dtype).bernoulli_(p, generator=g)
                      for g in _streams]).to(x.device)


def rand_like(x: Tensor) -> Tensor:
    return _draw(torch.rand, x.shape[0], tuple(x.shape[1:]), x)


def randn_like(x: Tensor) -> Tensor:
    return _draw(torch.randn, x.shape[0], tuple(x.shape[1:]), x)
