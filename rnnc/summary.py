"""``rc.summary``: a table of layers with output shapes, parameter counts and the memory estimate of the CNN
lecture, with totals.

Memory (the lecture's formula, generalised): every layer stores its output map, and a layer that applies a
nonlinearity after a linear map (Conv2d / Dense with an activation) stores both, as the lecture counts the
convolution and the activation map separately (:math:`2 k_i w_i h_i`). For a batch of ``B``,

.. math:: M = \\Big(B \\big(|x| + \\sum_i a_i\\big) + \\sum_i |\\theta_i|\\Big)
    \\cdot \\mathrm{sizeof}(\\mathrm{dtype}),

with :math:`|x|` the input size, :math:`a_i` the stored activations of layer i per sample and
:math:`|\\theta_i|` its parameter count. Recurrent blocks store every state of every sweep.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Row:
    name: str
    shape: tuple
    params: int
    activations: int


@dataclass
class Summary:
    """Rows per layer; totals; ``str()`` gives the table."""

    rows: list
    input_shape: tuple
    batch: int
    itemsize: int

    @property
    def params(self) -> int:
        return sum(r.params for r in self.rows)

    @property
    def activations(self) -> int:
        """Stored activations per sample, input included."""
        return int(np.prod(self.input_shape)) + sum(r.activations for r in self.rows)

    @property
    def memory_bytes(self) -> int:
        return (self.batch * self.activations + self.params) * self.itemsize

    def __str__(self) -> str:
        head = f"{'layer':<24}{'output shape':<22}{'params':>12}{'activations':>14}"
        lines = [head, "-" * len(head), f"{'input':<24}{str(self.input_shape):<22}{0:>12,}"
                 f"{int(np.prod(self.input_shape)):>14,}"]
        lines += [f"{r.name:<24}{str(r.shape):<22}{r.params:>12,}{r.activations:>14,}" for r in self.rows]
        lines += ["-" * len(head), f"total params: {self.params:,}",
                  f"activations per sample: {self.activations:,}",
                  f"memory (batch {self.batch}, {self.itemsize}-byte values): {self.memory_bytes / 2**20:,.2f} MiB"]
        return "\n".join(lines)


def _stored(layer, shape) -> int:
    from rnnc.nn.layers import Conv2d, Dense
    from rnnc.nn.recurrent import SpatialRNN

    n = int(np.prod(shape))
    if isinstance(layer, (Conv2d, Dense)) and layer.activation:
        return 2 * n
    if isinstance(layer, SpatialRNN):
        return 3 * n   # two sweeps of U per direction pair, concatenated twice, plus the output map
    return n


def summary(model, input_shape=None, batch: int = 1, dtype: str = "float32") -> Summary:
    """Summarise a :class:`~rnnc.nn.Classifier` (or a list of layers with ``input_shape``): one row per
    layer with its output shape, parameter count and stored activations per sample; totals and the memory
    estimate for ``batch`` samples of ``dtype``."""
    from rnnc.dsl.model import Model
    from rnnc.nn.base import Network

    layers = getattr(model, "layers", model)
    shape = tuple(input_shape if input_shape is not None else model.input_shape)
    net = Network(Model("summary"), train=False)
    x = net.model.input("x", shape, axes=())
    rows = []
    for layer in layers:
        before = set(net.model.params)
        x = layer(net, x)
        new = [n for k, n in net.model.params.items() if k not in before and "_running_" not in k]
        count = sum(int(np.prod(n.shape)) for n in new)
        rows.append(Row(type(layer).__name__, tuple(x.shape), count, _stored(layer, x.shape)))
    return Summary(rows, shape, int(batch), np.dtype(dtype).itemsize)
