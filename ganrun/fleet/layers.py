"""Layers of a fleet: M members' layers as one module, on inputs whose first
dimension holds the members' samples one block after another ((M * B, ...), member k
at rows k*B..(k+1)*B). Each is made from the members' own layers and gives back
member k's as a plain layer (`member`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ganrun import batch
from ganrun.regularizers.heads import MinibatchDiscrimination, MinibatchStdDev


def member_view(layer: nn.Module, name: str, t: Tensor, k: int) -> Tensor:
    """Member k's part of `t`, a tensor shaped like the stacked `layer`'s parameter or
    buffer `name` (the parameter itself, its gradient, an optimizer's state), as a view
    shaped like the member's own layer's: writing to it writes to the stack."""
    if isinstance(layer, StackedLinear):  # weights (M, in, out), biases (M, 1, out)
        if name in ("weight", "parametrizations.weight.original"):
            return t[k].t()
        if name == "bias":
            return t[k, 0]
    return t[k]


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


def to_channels(x: Tensor, members: int) -> Tensor:
    """(M * B, C, H, W) -> (B, M * C, H, W): the members side by side as channel groups."""
    b = x.shape[0] // members
    return x.reshape(members, b, *x.shape[1:]).transpose(0, 1).reshape(b, -1, *x.shape[2:])


def from_channels(y: Tensor, members: int) -> Tensor:
    """(B, M * C, H, W) -> (M * B, C, H, W)."""
    b = y.shape[0]
    return y.reshape(b, members, -1, *y.shape[2:]).transpose(0, 1).reshape(
        members * b, -1, *y.shape[2:])


class _StackedConv(nn.Module):
    """Every member's convolution as one grouped convolution (groups = M x the layer's)."""

    def __init__(self, layers: list[nn.Conv2d | nn.ConvTranspose2d]):
        super().__init__()
        first = layers[0]
        if first.padding_mode != "zeros":
            raise ValueError(f"padding_mode={first.padding_mode}: fleets pad with zeros")
        self.members, self.kind = len(layers), type(first)
        keys = ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation",
                "groups") + (("output_padding",) if isinstance(first, nn.ConvTranspose2d) else ())
        self.spec = {key: getattr(first, key) for key in keys}  # the layer's shape, not weights
        # (M, ...) like every stacked parameter (the optimizers' member axis), one grouped
        # weight in the convolution.
        self.weight = nn.Parameter(torch.stack([layer.weight.detach() for layer in layers]))
        self.bias = (nn.Parameter(torch.stack([layer.bias.detach() for layer in layers]))
                     if first.bias is not None else None)

    def _conv(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        bias = self.bias.flatten() if self.bias is not None else None
        out = self._conv(to_channels(x, self.members), self.weight.flatten(0, 1), bias)
        return from_channels(out, self.members)

    def member(self, k: int) -> nn.Module:
        layer = self.kind(**self.spec, bias=self.bias is not None)
        with torch.no_grad():
            layer.weight.copy_(self.weight[k])
            if self.bias is not None:
                layer.bias.copy_(self.bias[k])
        return layer


class StackedConv2d(_StackedConv):
    def _conv(self, x, weight, bias):
        c = self.spec
        return F.conv2d(x, weight, bias, c["stride"], c["padding"], c["dilation"],
                        c["groups"] * self.members)


class StackedConvTranspose2d(_StackedConv):
    def _conv(self, x, weight, bias):
        c = self.spec
        return F.conv_transpose2d(x, weight, bias, c["stride"], c["padding"],
                                  c["output_padding"], c["groups"] * self.members, c["dilation"])


class StackedBatchNorm2d(StackedBatchNorm1d):
    """nn.BatchNorm2d of every member: statistics over its own batch and positions."""

    def forward(self, x: Tensor) -> Tensor:
        xs = by_member(x, self.members)  # (M, B, C, H, W)
        if self.training:
            mean = xs.mean((1, 3, 4))
            var = xs.var((1, 3, 4), unbiased=False)
            with torch.no_grad():
                n = xs.shape[1] * xs.shape[3] * xs.shape[4]
                self.num_batches_tracked.add_(1)
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * (n / max(n - 1, 1)), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        shape = (self.members, 1, -1, 1, 1)
        out = (xs - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.reshape(x.shape)

    def member(self, k: int) -> nn.BatchNorm2d:
        flat = super().member(k)
        layer = nn.BatchNorm2d(flat.num_features, eps=self.eps, momentum=self.momentum,
                               affine=self.affine)
        layer.load_state_dict(flat.state_dict())
        return layer


class MemberDropout(nn.Module):
    """nn.Dropout of every member (the rate is structure): each member's mask from its
    own stream (ganrun.batch), drawn and applied as torch's dropout does on a CPU."""

    def __init__(self, layer: nn.Dropout):
        super().__init__()
        self.p = layer.p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = 1.0 - self.p
        return x * batch.bernoulli_like(x, keep).div_(keep)


class StackedMinibatchDiscrimination(nn.Module):
    """Minibatch discrimination of every member (ganrun.regularizers.heads): kernels T
    (M, in, B * C); each sample compared with its own member's samples only."""

    def __init__(self, layers: list[MinibatchDiscrimination]):
        super().__init__()
        self.members = len(layers)
        self.kernels, self.kernel_dim = layers[0].kernels, layers[0].kernel_dim
        self.T = nn.Parameter(torch.stack([layer.T.detach() for layer in layers]))

    def forward(self, f: Tensor) -> Tensor:
        fs = by_member(f, self.members)  # (M, N, A)
        m = torch.bmm(fs, self.T).view(self.members, fs.shape[1], self.kernels, self.kernel_dim)
        l1 = (m.unsqueeze(1) - m.unsqueeze(2)).abs().sum(4)  # (M, N, N, B)
        o = torch.exp(-l1).sum(2) - 1.0
        return torch.cat([f, o.reshape(f.shape[0], -1)], dim=1)

    def member(self, k: int) -> MinibatchDiscrimination:
        layer = MinibatchDiscrimination(self.T.shape[1], self.kernels, self.kernel_dim)
        with torch.no_grad():
            layer.T.copy_(self.T[k])
        return layer


class StackedSpectralNorm(nn.Module):
    """torch's spectral_norm parametrization of every member's weight: each member's
    power iteration on its own u and v (M, ...), its weight divided by its own sigma,
    computed as torch computes them (nn.utils.parametrizations.spectral_norm)."""

    def __init__(self, norms: list[nn.Module], transposed: bool):
        super().__init__()
        first = norms[0]
        self.dim, self.eps, self.iterations = first.dim, first.eps, first.n_power_iterations
        self.transposed = transposed  # StackedLinear keeps each member's weight transposed
        self.register_buffer("_u", torch.stack([n._u for n in norms]))
        self.register_buffer("_v", torch.stack([n._v for n in norms]))

    def _matrix(self, weight: Tensor) -> Tensor:
        """(M, rows, cols): each member's weight as torch's parametrization reshapes it."""
        if self.transposed:
            return weight.transpose(1, 2)
        if self.dim != 0:
            weight = weight.movedim(self.dim + 1, 1)
        return weight.flatten(2)

    def forward(self, weight: Tensor) -> Tensor:
        matrix = self._matrix(weight)
        if self.training:
            with torch.no_grad():
                for _ in range(self.iterations):
                    self._u.copy_(F.normalize(torch.bmm(matrix, self._v.unsqueeze(2)).squeeze(2),
                                              dim=1, eps=self.eps))
                    self._v.copy_(F.normalize(
                        torch.bmm(matrix.transpose(1, 2), self._u.unsqueeze(2)).squeeze(2),
                        dim=1, eps=self.eps))
        u, v = self._u.clone(), self._v.clone()
        sigma = (u * torch.bmm(matrix, v.unsqueeze(2)).squeeze(2)).sum(1)
        return weight / sigma.view(-1, *([1] * (weight.dim() - 1)))


class PerMember(nn.Module):
    """A layer without weights that looks across a batch (minibatch standard deviation),
    applied to each member's rows on their own."""

    def __init__(self, layer: nn.Module, members: int):
        super().__init__()
        self.layer, self.members = layer, members

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.layer(rows) for rows in x.chunk(self.members)])


STACKED = {nn.Linear: StackedLinear, nn.BatchNorm1d: StackedBatchNorm1d,
           nn.Embedding: StackedEmbedding, nn.Conv2d: StackedConv2d,
           nn.ConvTranspose2d: StackedConvTranspose2d, nn.BatchNorm2d: StackedBatchNorm2d,
           MinibatchDiscrimination: StackedMinibatchDiscrimination}
PER_MEMBER = (MinibatchStdDev,)  # no weights, but they compare a batch's samples
