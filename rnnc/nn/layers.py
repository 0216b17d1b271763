"""Feed-forward layers: Dense, Conv2d, BatchNorm, pooling, Dropout, Softmax, Normalizer, Flatten, Activation.

Each works on per-sample values (any loop axes pass through unchanged).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.dsl import init as inits
from rnnc.errors import ShapeError
from rnnc.ir.node import user_line
from rnnc.nn.base import BufferSpec, Layer, Network, activate, register_layer
from rnnc.ops import batch_norm, bn_stats, concat, cross_rank_mean, image, make, reshape, slice_features, softmax, sqrt


def _channels_view(v, x):
    """Reshape a per-channel vector ``(C,)`` to broadcast over ``x``'s (C, ...) features."""
    return v if len(x.shape) == 1 else reshape(v, (x.shape[0],) + (1,) * (len(x.shape) - 1))


@register_layer
@dataclass
class Dense(Layer):
    """:math:`y = f(W x + b)`, ``W`` (units, D) for a vector input ``x`` (D,)."""

    units: int
    activation: str | None = None
    bias: bool = True
    init: object = None
    prefix = "dense"

    def build(self, net: Network, x):
        if len(x.shape) != 1:
            raise ShapeError(f"Dense expects a vector input (D,), got shape {x.shape}; add nn.Flatten() first "
                             f"(at {user_line()})")
        name = net.unique(self.prefix)
        y = net.param(f"{name}_W", (self.units, x.shape[0]), self.init or inits.GlorotUniform()) @ x
        if self.bias:
            y = y + net.param(f"{name}_b", self.units, "zeros")
        return activate(self.activation, y)


@register_layer
@dataclass
class Conv2d(Layer):
    """:math:`y = f(w \\star x + b)` with ``filters`` kernels of size ``kernel`` (see :func:`rnnc.ops.image.conv2d`
    for stride, padding and dilation); bias initialised by ``bias_init`` (default 0), kernel Kaiming."""

    filters: int
    kernel: object = 3
    stride: object = 1
    padding: object = 0
    dilation: object = 1
    bias: bool = True
    activation: str | None = None
    init: object = None
    bias_init: float = 0.0
    prefix = "conv"

    def build(self, net: Network, x):
        if len(x.shape) != 3:
            raise ShapeError(f"Conv2d expects a feature map (C, H, W), got shape {x.shape} (at {user_line()})")
        kh, kw = image._pair(self.kernel, "kernel")
        name = net.unique(self.prefix)
        w = net.param(f"{name}_W", (self.filters, x.shape[0], kh, kw), self.init or inits.Kaiming())
        y = image.conv2d(x, w, self.stride, self.padding, self.dilation)
        if self.bias:
            b = net.param(f"{name}_b", self.filters, float(self.bias_init))
            y = y + reshape(b, (self.filters, 1, 1))
        return activate(self.activation, y)


@register_layer
@dataclass
class BatchNorm(Layer):
    """Batch normalisation per channel (first feature dim):
    :math:`y = \\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta`.

    Training: :math:`\\mu, \\sigma^2` are the batch statistics over samples, loop axes and spatial dims
    (:func:`rnnc.ops.batchnorm.bn_stats`, normalised by :func:`~rnnc.ops.batchnorm.batch_norm`: five passes over
    the map per training step); the model outputs them as ``<name>_batch_mean`` / ``_batch_var`` and the trainer
    updates the running statistics :math:`r \\leftarrow (1 - m) r + m s` outside the gradient (running variance
    unbiased, as PyTorch). Evaluation (``Network(train=False)``): :math:`\\mu, \\sigma^2` are the params
    ``<name>_running_mean`` / ``_running_var``.

    Synchronised (``Network(sync_batchnorm=True)``, as PyTorch's ``SyncBatchNorm``): the statistics are the
    global batch's over every rank of a data-parallel run, reduced inside the forward pass by
    :func:`~rnnc.ops.collective.cross_rank_mean` (rows-weighted mean over the ranks, the identity in one
    process) from each rank's :math:`\\mu_r, \\sigma^2_r` over its :math:`n_r` rows:

    .. math:: \\mu = \\sum_r \\tfrac{n_r}{n} \\mu_r, \\qquad
              \\sigma^2 = \\sum_r \\tfrac{n_r}{n} (\\sigma^2_r + \\mu_r^2) - \\mu^2

    and :math:`y = \\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta` written with elementwise ops,
    so that the gradient (the same collective on the adjoints of the statistics, in the backward pass) comes from
    the ops' VJPs. Slower than the fused default (no fused ``batch_norm`` / ``bn_input_grad``).
    """

    eps: float = 1e-5
    momentum: float = 0.1
    affine: bool = True
    prefix = "bn"

    def build(self, net: Network, x):
        if not x.shape:
            raise ShapeError(f"BatchNorm needs a channel dimension, got a scalar (at {user_line()})")
        name, c = net.unique(self.prefix), x.shape[0]
        per_sample = int(np.prod(x.shape[1:]))
        for stat, init in (("mean", 0.0), ("var", 1.0)):
            net.buffers[f"{name}_running_{stat}"] = BufferSpec((c,), init, f"{name}_batch_{stat}", self.momentum,
                                                               stat == "var", per_sample)
        gamma = net.param(f"{name}_gamma", c, 1.0) if self.affine else None
        beta = net.param(f"{name}_beta", c, 0.0) if self.affine else None
        if net.train and net.sync_batchnorm:
            mu, var = _global_moments(x, c)
            net.model.output(f"{name}_batch_mean", mu)
            net.model.output(f"{name}_batch_var", var)
            return _normalise(x, mu, var, gamma, beta, self.eps)
        if net.train:
            stats = bn_stats(x)
            net.model.output(f"{name}_batch_mean", slice_features(stats, 0, c))
            net.model.output(f"{name}_batch_var", slice_features(stats, c, 2 * c))
            return batch_norm(x, stats, gamma, beta, self.eps)
        mu = net.param(f"{name}_running_mean", c, 0.0)
        var = net.param(f"{name}_running_var", c, 1.0)
        return _normalise(x, mu, var, gamma, beta, self.eps)


def _global_moments(x, c: int):
    """The global batch's mean and biased variance per channel: one collective of
    :math:`[\\mu_r; \\sigma^2_r + \\mu_r^2]` (see :class:`BatchNorm`)."""
    stats = bn_stats(x)
    mu_r, var_r = slice_features(stats, 0, c), slice_features(stats, c, 2 * c)
    moments = cross_rank_mean(concat([mu_r, var_r + mu_r * mu_r]))
    mu = slice_features(moments, 0, c)
    return mu, slice_features(moments, c, 2 * c) - mu * mu


def _normalise(x, mu, var, gamma, beta, eps: float):
    """:math:`\\gamma (x - \\mu) / \\sqrt{\\sigma^2 + \\epsilon} + \\beta` per channel, from ``(C,)`` vectors."""
    y = (x - _channels_view(mu, x)) / sqrt(_channels_view(var, x) + eps)
    if gamma is not None:
        y = y * _channels_view(gamma, x) + _channels_view(beta, x)
    return y


@register_layer
@dataclass
class MaxPool2d(Layer):
    """:math:`y[c, u, v] = \\max` over each ``kernel`` window (stride defaults to the kernel, -inf padding)."""

    kernel: object = 2
    stride: object = None
    padding: object = 0

    def build(self, net, x):
        return image.maxpool2d(x, self.kernel, self.stride, self.padding)


@register_layer
@dataclass
class AvgPool2d(Layer):
    """Mean over each ``kernel`` window; ``kernel="all"`` is global average pooling to (C, 1, 1)."""

    kernel: object = "all"
    stride: object = None
    padding: object = 0

    def build(self, net, x):
        return image.avgpool2d(x, self.kernel, self.stride, self.padding)


@register_layer
@dataclass
class Dropout(Layer):
    """Inverted dropout: :math:`y = x \\odot m`, :math:`m_k \\in \\{0, 1/(1-p)\\}` drawn with probability p of 0.

    The mask is a model input ``<name>_mask`` (same layout as ``x``) that the trainer draws from its seeded
    generator each step, so a run is reproducible; in evaluation mode the layer is the identity."""

    p: float = 0.5
    prefix = "dropout"

    def build(self, net: Network, x):
        if not 0.0 <= self.p < 1.0:
            raise ValueError(f"Dropout p must be in [0, 1), got {self.p}")
        name = net.unique(self.prefix)
        if not net.train or self.p == 0.0:
            return x
        mask = net.model.input(f"{name}_mask", x.shape, axes=x.axes)
        net.noise[f"{name}_mask"] = self.p
        return x * mask


@register_layer
@dataclass
class Softmax(Layer):
    """:math:`\\mathrm{softmax}(x)_k = e^{x_k} / \\sum_j e^{x_j}` (a classifier's loss uses the logits before it)."""

    def build(self, net, x):
        if len(x.shape) != 1:
            x = reshape(x, (int(np.prod(x.shape)),))
        return softmax(x)


@register_layer
@dataclass
class Normalizer(Layer):
    """:math:`y = x / d` (neon's ``DataTransform(Normalizer(divisor))``)."""

    divisor: float = 255.0

    def build(self, net, x):
        return x * (1.0 / float(self.divisor))


@register_layer
@dataclass
class Flatten(Layer):
    """Reshape each sample's features to a vector ``(prod(shape),)``."""

    def build(self, net, x):
        return reshape(x, (int(np.prod(x.shape)),))


@register_layer
@dataclass
class Activation(Layer):
    """:math:`y = f(x)` for a named activation (``tanh``, ``relu``, ``sigmoid``, ``softmax``)."""

    name: str = "relu"

    def build(self, net, x):
        return activate(self.name, x)


@register_layer
@dataclass
class Sequential(Layer):
    """Apply ``layers`` in order: :math:`y = f_n(\\dots f_1(x))`. ``Stack`` is the same for recurrent layers."""

    layers: tuple = ()

    def build(self, net, x):
        for layer in self.layers:
            x = layer.build(net, x)
        return x


Stack = Sequential
__all__ = ["Dense", "Conv2d", "BatchNorm", "MaxPool2d", "AvgPool2d", "Dropout", "Softmax", "Normalizer",
           "Flatten", "Activation", "Sequential", "Stack", "make"]
