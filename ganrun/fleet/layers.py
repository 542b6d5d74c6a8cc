"""Layers of a fleet: M members' layers as one module, on inputs whose first
dimension holds the members' samples one block after another ((M * B, ...), member k
at rows k*B..(k+1)*B). Each is made from the members' own layers and gives back
member k's as a plain layer (`member`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def by_member(x: Tensor, members: int) -> Tensor:
    """(M * B, ...) -> (M, B, ...)."""
    return x.reshape(members, x.shape[0] // members, *x.shape[1:])


class StackedLinear(nn.Module):
    """nn.Linear of every member: weights (M, in, out), biases (M, 1, out); one batched
    matrix product for all members."""

    def __init__(self, layers: list[nn.Linear]):
        super().__init__()
        self.members = len(layers)
        self.weight = nn.Parameter(torch.stack([layer.weight.detach().t() for layer in layers]))
        has_bias = layers[0].bias is not None
        self.bias = (nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]).unsqueeze(1))
                     if has_bias else None)

    def forward(self, x: Tensor) -> Tensor:
        xs = by_member(x, self.members)
        out = torch.baddbmm(self.bias, xs, self.weight) if self.bias is not None else xs @ self.weight
        return out.reshape(x.shape[0], -1)

    def member(self, k: int) -> nn.Linear:
        layer = nn.Linear(self.weight.shape[1], self.weight.shape[2], bias=self.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.weight[k].t())
            if self.bias is not None:
                layer.bias.copy_(self.bias[k, 0])
        return layer


class StackedBatchNorm1d(nn.Module):
    """nn.BatchNorm1d of every member: each normalises by its own batch's statistics
    and keeps its own running ones (momentum and eps shared: they are structure)."""

    def __init__(self, layers: list[nn.BatchNorm1d]):
        super().__init__()
        first = layers[0]
        self.members, self.eps, self.momentum = len(layers), first.eps, first.momentum
        self.affine = first.affine
        if self.affine:
            self.weight = nn.Parameter(torch.stack([b.weight.detach() for b in layers]))
            self.bias = nn.Parameter(torch.stack([b.bias.detach() for b in layers]))
        self.register_buffer("running_mean", torch.stack([b.running_mean for b in layers]))
        self.register_buffer("running_var", torch.stack([b.running_var for b in layers]))
        self.register_buffer("num_batches_tracked",
                             torch.stack([b.num_batches_tracked for b in layers]))

    def forward(self, x: Tensor) -> Tensor:
        xs = by_member(x, self.members)  # (M, B, F)
        if self.training:
            mean = xs.mean(1)
            var = xs.var(1, unbiased=False)
            with torch.no_grad():
                n = xs.shape[1]
                self.num_batches_tracked.add_(1)
                unbiased = var * (n / max(n - 1, 1))
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(unbiased, self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        out = (xs - mean.unsqueeze(1)) * torch.rsqrt(var.unsqueeze(1) + self.eps)
        if self.affine:
            out = out * self.weight.unsqueeze(1) + self.bias.unsqueeze(1)
        return out.reshape(x.shape)

    def member(self, k: int) -> nn.BatchNorm1d:
        layer = nn.BatchNorm1d(self.running_mean.shape[1], eps=self.eps, momentum=self.momentum,
                               affine=self.affine)
        with torch.no_grad():
            if self.affine:
                layer.weight.copy_(self.weight[k])
                layer.bias.copy_(self.bias[k])
            layer.running_mean.copy_(self.running_mean[k])
            layer.running_var.copy_(self.running_var[k])
            layer.num_batches_tracked.copy_(self.num_batches_tracked[k])
        return layer


class StackedEmbedding(nn.Module):
    """nn.Embedding of every member (class embeddings and D's projection): tables
    (M, classes, dim), each sample looked up in its member's table."""

    def __init__(self, layers: list[nn.Embedding]):
        super().__init__()
        self.members = len(layers)
        self.weight = nn.Parameter(torch.stack([e.weight.detach() for e in layers]))

    def forward(self, labels: Tensor) -> Tensor:
        member = torch.arange(self.members, device=labels.device).repeat_interleave(
            labels.shape[0] // self.members)
        return self.weight[member, labels]

    def member(self, k: int) -> nn.Embedding:
        layer = nn.Embedding(self.weight.shape[1], self.weight.shape[2])
        with torch.no_grad():
            layer.weight.copy_(self.weight[k])
        return layer


STACKED = {nn.Linear: StackedLinear, nn.BatchNorm1d: StackedBatchNorm1d,
           nn.Embedding: StackedEmbedding}
