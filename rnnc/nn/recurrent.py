"""Recurrent layers: a cell run along an axis (forward or reversed), bidirectional pairs, deep transition and
deep output, and the ReNet / ReSeg ``SpatialRNN`` block over a grid of image patches.
"""
from __future__ import annotations

from dataclasses import dataclass

from rnnc.dsl.model import axes as make_axes
from rnnc.errors import GraphError
from rnnc.ir.node import Axis, user_line
from rnnc.nn.base import Layer, Network, activate, register_layer
from rnnc.nn.cells import WEIGHT_NAMES, ElmanCell, GRUCell, JordanCell, LSTMCell
from rnnc.ops import concat, image


def _resolve_axis(axis, x) -> Axis:
    if not x.axes:
        raise GraphError(f"a recurrent layer needs an input that varies along an axis (e.g. x[t]); "
                         f"{x.label()} has none (at {user_line()})")
    if axis is None:
        if len(x.axes) != 1:
            raise GraphError(f"{x.label()} varies along {[a.name for a in x.axes]}; pass axis= to pick the "
                             f"one the recurrence runs along (at {user_line()})")
        return x.axes[0]
    for a in x.axes:
        if a is axis or (isinstance(axis, str) and a.name == axis):
            return a
    raise GraphError(f"axis {axis!r} is not an axis of {x.label()} ({[a.name for a in x.axes]}) at {user_line()}")


@register_layer
@dataclass
class Recurrent(Layer):
    """Run ``cell`` along ``axis`` (the input's only axis by default): for every state :math:`s`,
    :math:`s[t] = \\mathrm{step}(x[t], s[t-1])` (``s[t+1]`` with ``reverse``), other axes in parallel.

    ``transition=k`` (deep transition, Pascanu et al. 2014) inserts k layers between the previous and the new
    state: :math:`h_t = \\tanh(V_k \\cdots \\tanh(V_1\\, \\mathrm{cell}(x_t, h_{t-1}) + c_1) \\cdots + c_k)`.
    ``deep_output=(n1, n2, ...)`` adds tanh layers on the output: :math:`y_t = \\tanh(D_2 \\tanh(D_1 h_t + e_1) + e_2)`.
    ``initial="learned"`` makes each initial state a param (default zeros). Returns :math:`h[t]`.
    """

    cell: object
    axis: object = None
    reverse: bool = False
    transition: int = 0
    deep_output: tuple = ()
    initial: str = "zeros"
    prefix = "rnn"

    def build(self, net: Network, x):
        axis = _resolve_axis(self.axis, x)
        name = net.unique(self.prefix)
        m = net.model
        p = self.cell.declare(net, name, x.shape[0])
        sizes = self.cell.state_sizes()
        sigs = [m.signal(f"{name}_s{k}" if k else f"{name}_h", (n,)) for k, n in enumerate(sizes)]
        here = tuple(x.axes)
        back = tuple(a + 1 if a is axis and self.reverse else a - 1 if a is axis else a for a in x.axes)
        if self.initial == "learned":
            for k, (s, n) in enumerate(zip(sigs, sizes)):
                m.initial(s, net.param(f"{name}_init{k}", n, "zeros"))
        elif self.initial != "zeros":
            raise ValueError(f"initial must be 'zeros' or 'learned', got {self.initial!r}")
        new = list(self.cell.step(p, x, tuple(s[back] for s in sigs)))
        for k in range(self.transition):
            v = net.param(f"{name}_T{k + 1}", (sizes[0], sizes[0]))
            new[0] = activate("tanh", v @ new[0] + net.param(f"{name}_Tb{k + 1}", sizes[0], "zeros"))
        for s, node in zip(sigs, new):
            s[here] = node
        out = sigs[0][here]
        for k, units in enumerate(self.deep_output):
            d = net.param(f"{name}_D{k + 1}", (units, out.shape[0]))
            out = activate("tanh", d @ out + net.param(f"{name}_Db{k + 1}", units, "zeros"))
        return out


@register_layer
@dataclass
class Bidirectional(Layer):
    """A forward and a reversed run of ``cell`` (separate params), concatenated:
    :math:`y[t] = [\\overrightarrow{h}[t];\\ \\overleftarrow{h}[t]]` of size ``2 * hidden``."""

    cell: object
    axis: object = None
    transition: int = 0
    prefix = "birnn"

    def build(self, net, x):
        fwd = Recurrent(self.cell, self.axis, False, self.transition).build(net, x)
        bwd = Recurrent(self.cell, self.axis, True, self.transition).build(net, x)
        return concat([fwd, bwd])


def _layer(cell, axis, reverse, transition, deep_output, initial):
    return Recurrent(cell, axis, reverse, transition, tuple(deep_output), initial)


def Elman(hidden, activation="tanh", axis=None, reverse=False, transition=0, deep_output=(), initial="zeros"):
    """An Elman layer: :math:`h_t = f(U x_t + W h_{t-1} + b)` (see :class:`ElmanCell`, :class:`Recurrent`)."""
    return _layer(ElmanCell(hidden, activation), axis, reverse, transition, deep_output, initial)


def Jordan(hidden, output, activation="tanh", output_activation="tanh", axis=None, reverse=False):
    """A Jordan layer: :math:`h_t = f(U x_t + W y_{t-1} + b)`, :math:`y_t = g(V h_t + c)` (see :class:`JordanCell`)."""
    return _layer(JordanCell(hidden, output, activation, output_activation), axis, reverse, 0, (), "zeros")


def LSTM(hidden, peephole=False, coupled=False, forget_bias=0.0, axis=None, reverse=False, transition=0,
         deep_output=(), initial="zeros"):
    """An LSTM layer (see :class:`LSTMCell` for the equations and the peephole / coupled variants)."""
    return _layer(LSTMCell(hidden, peephole, coupled, forget_bias), axis, reverse, transition, deep_output, initial)


def GRU(hidden, axis=None, reverse=False, transition=0, deep_output=(), initial="zeros"):
    """A GRU layer (see :class:`GRUCell`)."""
    return _layer(GRUCell(hidden), axis, reverse, transition, deep_output, initial)


@register_layer
@dataclass
class SpatialRNN(Layer):
    """The ReNet / ReSeg recurrent block on a feature map ``x`` (C, H, W).

    Cut ``x`` into ``block = (ph, pw)`` patches :math:`p_{ij} \\in \\mathbb{R}^{C p_h p_w}` on a grid (i, j)
    (:func:`rnnc.ops.image.to_grid`); sweep the rows down and up, :math:`o^{\\downarrow}_{ij} =
    f^{\\downarrow}(o^{\\downarrow}_{i-1,j}, p_{ij})`, :math:`o^{\\uparrow}_{ij} = f^{\\uparrow}(o^{\\uparrow}_{i+1,j},
    p_{ij})`, concatenate to :math:`o^{\\updownarrow}_{ij} \\in \\mathbb{R}^{2U}`; sweep that right and left the same
    way and concatenate again; return the map (2U, H / ph, W / pw) (:func:`rnnc.ops.image.from_grid`).

    ``cell`` is a cell instance (its ``hidden`` is U) or None for ``ElmanCell(hidden, activation)``. A map that
    the block does not divide is refused, or zero-padded with ``pad=True``.
    """

    block: tuple = (2, 2)
    hidden: int = 0
    cell: object = None
    activation: str = "tanh"
    pad: bool = False
    prefix = "srnn"

    def spec(self) -> dict:
        return {**Layer.spec(self), "weight_names": WEIGHT_NAMES}

    def build(self, net, x):
        cell = self.cell if self.cell is not None else ElmanCell(self.hidden, self.activation)
        if not cell.hidden:
            raise ValueError("SpatialRNN needs hidden= (the number of units per direction) or a cell")
        name = net.unique(self.prefix)
        i, j = make_axes(f"{name}_i", f"{name}_j")
        grid = image.to_grid(x, self.block, (i, j), pad=self.pad)
        vertical = Bidirectional(cell, i).build(net, grid)
        horizontal = Bidirectional(cell, j).build(net, vertical)
        return image.from_grid(horizontal, (1, 1), (i, j))
