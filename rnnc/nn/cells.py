"""Recurrent cells: the per-step equations. A wrapper (:class:`rnnc.nn.recurrent.Recurrent`) turns a cell into
signals and references along an axis, so every cell, including a user's, works forward, reversed,
bidirectional, stacked and on 2-D grids.

A cell declares its state sizes (the first state is the layer's output), its params, and one ``step``:
``step(p, x, prev) -> new states`` where ``x`` is the input at the current index and ``prev`` the states at
the previous index (``h[t-1]``, or ``h[t+1]`` reversed).
"""
from __future__ import annotations

from dataclasses import dataclass

from rnnc.dsl import init as inits
from rnnc.nn.base import activate, register_layer
from rnnc.ops import concat, sigmoid, split, tanh


class Cell:
    """Base class of cells (dataclasses with at least ``hidden``).

    Subclasses implement ``state_sizes()``, ``declare(net, name, input_size) -> dict`` and
    ``step(p, x, prev) -> tuple``; they may be used in saved specs after ``@nn.register_layer``.
    """

    hidden: int

    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden,)

    def declare(self, net, name: str, input_size: int) -> dict:
        raise NotImplementedError

    def step(self, p: dict, x, prev: tuple) -> tuple:
        raise NotImplementedError

    def spec(self) -> dict:
        from rnnc.nn.base import Layer

        return {**Layer.spec(self), "weight_names": WEIGHT_NAMES}


#: The names of the built-in cells' weights, recorded in their saved specs: 2 since rnnc uses the lectures' names
#: (``U`` input -> hidden, ``W`` hidden -> hidden, ``V`` hidden -> output); before, ``W`` and ``U`` were swapped.
WEIGHT_NAMES = 2
#: The layers whose saved specs need that mark (a user's cell names its own weights; ``SpatialRNN`` makes an
#: ``ElmanCell`` when its ``cell`` is null).
RENAMED_LAYERS = ("ElmanCell", "JordanCell", "LSTMCell", "GRUCell", "SpatialRNN")


def _gates(net, name, n_gates, hidden, input_size, init, recurrent_init):
    """The stacked weights of ``n_gates`` gates: ``U`` (n H, D) on the input, ``W`` (n H, H) on the state."""
    return {"U": net.param(f"{name}_U", (n_gates * hidden, input_size), init or inits.GlorotUniform()),
            "W": net.param(f"{name}_W", (n_gates * hidden, hidden),
                           recurrent_init or _stacked_orthogonal(n_gates, hidden))}


def _stacked_orthogonal(n, hidden):
    return inits.Orthogonal() if n == 1 else inits.GlorotUniform()


@register_layer
@dataclass
class ElmanCell(Cell):
    """Elman: :math:`h_t = f(U x_t + W h_{t-1} + b)`; params ``U`` (H, D), ``W`` (H, H), ``b`` (H,)."""

    hidden: int
    activation: str = "tanh"
    init: object = None
    recurrent_init: object = None

    def declare(self, net, name, input_size):
        p = _gates(net, name, 1, self.hidden, input_size, self.init, self.recurrent_init)
        p["b"] = net.param(f"{name}_b", self.hidden, "zeros")
        return p

    def step(self, p, x, prev):
        return (activate(self.activation, p["U"] @ x + p["W"] @ prev[0] + p["b"]),)


@register_layer
@dataclass
class JordanCell(Cell):
    """Jordan: the output feeds back. :math:`h_t = f(U x_t + W y_{t-1} + b)`, :math:`y_t = g(V h_t + c)`;
    the state (and the layer's output) is :math:`y` of size ``output``. Params ``U`` (H, D), ``W`` (H, O),
    ``b`` (H,), ``V`` (O, H), ``c`` (O,)."""

    hidden: int
    output: int
    activation: str = "tanh"
    output_activation: str | None = "tanh"
    init: object = None

    def state_sizes(self):
        return (self.output,)

    def declare(self, net, name, input_size):
        g = self.init or inits.GlorotUniform()
        return {"U": net.param(f"{name}_U", (self.hidden, input_size), g),
                "W": net.param(f"{name}_W", (self.hidden, self.output), g),
                "b": net.param(f"{name}_b", self.hidden, "zeros"),
                "V": net.param(f"{name}_V", (self.output, self.hidden), g),
                "c": net.param(f"{name}_c", self.output, "zeros")}

    def step(self, p, x, prev):
        h = activate(self.activation, p["U"] @ x + p["W"] @ prev[0] + p["b"])
        return (activate(self.output_activation, p["V"] @ h + p["c"]),)


@register_layer
@dataclass
class LSTMCell(Cell):
    """LSTM (gate order i, f, g, o as in PyTorch; stacked weights ``U`` (4H, D) on the input, ``W`` (4H, H) on
    the state, one bias ``b`` (4H,)):

    .. math::
        i = \\sigma(U_i x + W_i h_{t-1} + b_i [+ p_i \\odot c_{t-1}]),\\quad
        f = \\sigma(U_f x + W_f h_{t-1} + b_f [+ p_f \\odot c_{t-1}])\\ \\text{or}\\ 1 - i\\ (\\text{coupled}),\\\\
        g = \\tanh(U_g x + W_g h_{t-1} + b_g),\\quad c_t = f \\odot c_{t-1} + i \\odot g,\\\\
        o = \\sigma(U_o x + W_o h_{t-1} + b_o [+ p_o \\odot c_t]),\\quad h_t = o \\odot \\tanh(c_t).

    ``peephole`` adds the bracketed terms, ``coupled`` ties the forget gate to the input gate (Greff et al.,
    "LSTM: A Search Space Odyssey"): a coupled cell has no forget-gate weights at all, its stacks hold the gates
    (i, g, o) and are (3H, D), (3H, H), (3H,), and with ``peephole`` it has no ``pf``. ``forget_bias``
    initialises :math:`b_f`. States: (h, c).
    """

    hidden: int
    peephole: bool = False
    coupled: bool = False
    forget_bias: float = 0.0
    init: object = None
    recurrent_init: object = None

    def gates(self) -> tuple[str, ...]:
        """The gates whose weights are stacked, in order: ``("i", "f", "g", "o")``, or ``("i", "g", "o")``
        when coupled."""
        return ("i", "g", "o") if self.coupled else ("i", "f", "g", "o")

    def state_sizes(self):
        return (self.hidden, self.hidden)

    def declare(self, net, name, input_size):
        import numpy as np

        hsz, gates = self.hidden, self.gates()
        p = _gates(net, name, len(gates), hsz, input_size, self.init, self.recurrent_init)
        b0 = np.zeros(len(gates) * hsz)
        if "f" in gates:
            b0[hsz:2 * hsz] = self.forget_bias
        p["b"] = net.param(f"{name}_b", len(gates) * hsz, b0)
        if self.peephole:
            for gate in ("i", "f", "o"):
                if gate in gates:
                    p["p" + gate] = net.param(f"{name}_p{gate}", hsz, "zeros")
        return p

    def step(self, p, x, prev):
        h, c = prev
        z = dict(zip(self.gates(), split(p["U"] @ x + p["W"] @ h + p["b"], [self.hidden] * len(self.gates()))))
        if self.peephole:
            z["i"] = z["i"] + p["pi"] * c
            if not self.coupled:
                z["f"] = z["f"] + p["pf"] * c
        i = sigmoid(z["i"])
        f = 1.0 - i if self.coupled else sigmoid(z["f"])
        c_new = f * c + i * tanh(z["g"])
        zo = z["o"] + p["po"] * c_new if self.peephole else z["o"]
        return sigmoid(zo) * tanh(c_new), c_new


@register_layer
@dataclass
class GRUCell(Cell):
    """GRU (PyTorch's convention, gate order r, z, n; input bias ``bx`` and recurrent bias ``bh``; weights ``U``
    (3H, D) on the input and ``W`` (3H, H) on the state):

    .. math::
        r = \\sigma(U_r x + b^x_r + W_r h_{t-1} + b^h_r),\\quad z = \\sigma(U_z x + b^x_z + W_z h_{t-1} + b^h_z),\\\\
        n = \\tanh(U_n x + b^x_n + r \\odot (W_n h_{t-1} + b^h_n)),\\quad h_t = (1 - z) \\odot n + z \\odot h_{t-1}.
    """

    hidden: int
    init: object = None
    recurrent_init: object = None

    def declare(self, net, name, input_size):
        p = _gates(net, name, 3, self.hidden, input_size, self.init, self.recurrent_init)
        p["bx"] = net.param(f"{name}_bx", 3 * self.hidden, "zeros")
        p["bh"] = net.param(f"{name}_bh", 3 * self.hidden, "zeros")
        return p

    def step(self, p, x, prev):
        (h,) = prev
        hs = [self.hidden] * 3
        xr, xz, xn = split(p["U"] @ x + p["bx"], hs)
        hr, hz, hn = split(p["W"] @ h + p["bh"], hs)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        n = tanh(xn + r * hn)
        return ((1.0 - z) * n + z * h,)


__all__ = ["WEIGHT_NAMES", "Cell", "ElmanCell", "JordanCell", "LSTMCell", "GRUCell", "concat"]
