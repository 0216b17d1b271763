"""Weights to and from PyTorch's ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` ``state_dict``s, for rnnc.nn's Elman,
LSTM and GRU layers. This module never imports torch: it reads anything ``np.asarray`` takes (a tensor is
read through ``.detach().cpu().numpy()``) and writes numpy arrays.

The conventions, PyTorch's ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` (with
``_reverse`` for the backward direction of a bidirectional module) against rnnc's ``<layer>_U`` (input -> hidden),
``<layer>_W`` (hidden -> hidden) and biases:

============  ======================  ===================================================================
rnnc layer    PyTorch module          params
============  ======================  ===================================================================
``Elman``     ``nn.RNN``              ``U = weight_ih``, ``W = weight_hh``, ``b = bias_ih + bias_hh``
``LSTM``      ``nn.LSTM``             gates (i, f, g, o) stacked alike; ``U``, ``W`` as above, ``b = bias_ih + bias_hh``
``GRU``       ``nn.GRU``              gates (r, z, n) stacked alike; ``U``, ``W``, ``bx = bias_ih``, ``bh = bias_hh``
============  ======================  ===================================================================

rnnc's Elman and LSTM cells have one bias: importing adds PyTorch's two (exact up to one rounding), exporting
writes it as ``bias_ih`` and zeros as ``bias_hh``. rnnc's GRU is PyTorch's formulation, with the reset gate
applied after the recurrent product and its bias, :math:`n = \\tanh(U_n x + b^x_n + r \\odot (W_n h + b^h_n))`, so
both biases map one to one and the import is exact.

What has no counterpart is refused with a message: a Jordan layer, a peephole or coupled LSTM, ``transition``
or ``deep_output``, an Elman activation other than tanh / relu (PyTorch's ``nonlinearity`` is not in its
``state_dict``: build the module with the same one), LSTM projections (``proj_size``). A module built with
``bias=False`` imports with zero biases.

Layers: a PyTorch module with ``num_layers=L`` (and ``bidirectional``) is L rnnc layers (pairs of them) in
build order, ``nn.Stack([nn.LSTM(H)] * L)`` or ``nn.Stack([nn.Bidirectional(nn.LSTMCell(H))] * L)``, whose
params rnnc names ``rnn1``, ``rnn2``, ... (forward before reverse); pass ``names`` for others. The data layout
(``batch_first``) does not touch the weights: rnnc's arrays are time-first, ``(T, B, D)``.
"""
from __future__ import annotations

import numpy as np

from rnnc.nn.cells import ElmanCell, GRUCell, LSTMCell

__all__ = ["from_torch", "to_torch"]

_GATES = {ElmanCell: 1, LSTMCell: 4, GRUCell: 3}
_MODULE = {ElmanCell: "nn.RNN", LSTMCell: "nn.LSTM", GRUCell: "nn.GRU"}


def from_torch(state_dict, layer, names=None, prefix: str = "") -> dict[str, np.ndarray]:
    """rnnc params from the ``state_dict`` of a PyTorch ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``.

    Parameters
    ----------
    state_dict : mapping
        PyTorch's names to arrays or tensors (``module.state_dict()``).
    layer : rnnc.nn layer or cell
        What the weights are for: ``nn.Elman(H)``, ``nn.LSTM(H)``, ``nn.GRU(H)``, ``nn.Bidirectional(cell)``
        or a cell; it fixes the kind, the hidden size and (bidirectional) the directions.
    names : list of str, optional
        rnnc's layer names, one per layer and direction in build order (default ``rnn1``, ``rnn2``, ...).
    prefix : str
        Only keys under this prefix are read (``"encoder."`` for a submodule of a larger model).

    Returns
    -------
    dict
        ``{"rnn1_U": ..., "rnn1_W": ..., "rnn1_b": ...}`` (GRU: ``_bx``, ``_bh``), float arrays in the
        state dict's dtype, to merge into ``model.init_params()``.
    """
    cell, dirs = _cell_of(layer)
    arrays = {k[len(prefix):]: _array(k, v) for k, v in state_dict.items() if k.startswith(prefix)}
    if not arrays:
        raise ValueError(f"no {_MODULE[type(cell)]} weights in the state dict"
                         + (f" under the prefix {prefix!r}" if prefix else ""))
    layers = _count_layers(arrays, cell, prefix)
    names = _names(names, layers * dirs)
    gates, hidden = _GATES[type(cell)], cell.hidden
    out, used = {}, set()
    input_size = _need(arrays, "weight_ih_l0", prefix).shape[-1]
    for k in range(layers):
        for d, sfx in enumerate(("", "_reverse")[:dirs]):
            keys = {w: f"{w}_l{k}{sfx}" for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            u = _shaped(arrays, keys["weight_ih"], (gates * hidden, input_size), prefix)
            w = _shaped(arrays, keys["weight_hh"], (gates * hidden, hidden), prefix)
            b_ih, b_hh = (_shaped(arrays, keys[b], (gates * hidden,), prefix, zeros=u.dtype)
                          for b in ("bias_ih", "bias_hh"))
            used.update(keys.values())
            name = names[k * dirs + d]
            out[f"{name}_U"], out[f"{name}_W"] = u, w
            if isinstance(cell, GRUCell):
                out[f"{name}_bx"], out[f"{name}_bh"] = b_ih, b_hh
            else:
                out[f"{name}_b"] = b_ih + b_hh
        input_size = hidden * dirs
    extra = sorted(set(arrays) - used)
    if dirs == 1 and any(k.endswith("_reverse") for k in extra):
        raise ValueError("the state dict is of a bidirectional module: pass nn.Bidirectional(cell) as the layer")
    if extra:
        raise ValueError(f"state dict key {prefix + extra[0]!r} has no counterpart in rnnc's "
                         f"{type(cell).__name__} (PyTorch's proj_size, or a different module?)")
    return out


def to_torch(params: dict, layer, layers: int = 1, names=None, prefix: str = "") -> dict[str, np.ndarray]:
    """A PyTorch ``state_dict`` (numpy arrays) from rnnc params, for the module with the same sizes, e.g.
    ``nn.LSTM(D, H, num_layers=layers, bidirectional=...)``; load it with
    ``module.load_state_dict({k: torch.as_tensor(v) for k, v in sd.items()})``.

    ``layer``, ``names`` and ``prefix`` as in :func:`from_torch`; ``layers`` is ``num_layers``. rnnc's single
    bias (Elman, LSTM) becomes ``bias_ih`` and ``bias_hh`` is zeros.
    """
    cell, dirs = _cell_of(layer)
    if not isinstance(layers, int) or isinstance(layers, bool) or layers < 1:
        raise ValueError(f"layers must be an int >= 1 (PyTorch's num_layers), got {layers!r}")
    names = _names(names, layers * dirs)
    out = {}
    for k in range(layers):
        for d, sfx in enumerate(("", "_reverse")[:dirs]):
            name = names[k * dirs + d]
            got = {p: _param(params, f"{name}_{p}") for p in (("U", "W", "bx", "bh") if isinstance(cell, GRUCell)
                                                               else ("U", "W", "b"))}
            rows = _GATES[type(cell)] * cell.hidden
            if got["U"].ndim != 2 or got["U"].shape[0] != rows or got["W"].shape != (rows, cell.hidden):
                raise ValueError(f"params {name}_U {got['U'].shape} / {name}_W {got['W'].shape} are not those of "
                                 f"a {type(cell).__name__}({cell.hidden}): expected ({rows}, D) / "
                                 f"({rows}, {cell.hidden})")
            out[f"{prefix}weight_ih_l{k}{sfx}"], out[f"{prefix}weight_hh_l{k}{sfx}"] = got["U"], got["W"]
            b_ih, b_hh = (got["bx"], got["bh"]) if isinstance(cell, GRUCell) else (got["b"], np.zeros_like(got["b"]))
            out[f"{prefix}bias_ih_l{k}{sfx}"], out[f"{prefix}bias_hh_l{k}{sfx}"] = b_ih, b_hh
    return out


def _cell_of(layer) -> tuple:
    """The cell and the number of directions (1 or 2) of an rnnc layer or cell; refuses what PyTorch lacks."""
    from rnnc.nn.recurrent import Bidirectional, Recurrent

    dirs = 2 if isinstance(layer, Bidirectional) else 1
    if isinstance(layer, (Recurrent, Bidirectional)):
        if layer.transition:
            raise ValueError("a deep-transition layer (transition=k) has no PyTorch counterpart")
        if getattr(layer, "deep_output", ()):
            raise ValueError("a layer with deep_output has no PyTorch counterpart")
        if getattr(layer, "reverse", False):
            raise ValueError("a reversed layer alone has no PyTorch counterpart; use nn.Bidirectional")
        cell = layer.cell
    else:
        cell = layer
    if type(cell) not in _GATES:
        raise ValueError(f"{type(cell).__name__} has no PyTorch counterpart; Elman (nn.RNN), LSTM (nn.LSTM) and "
                         "GRU (nn.GRU) layers do")
    if isinstance(cell, LSTMCell) and (cell.peephole or cell.coupled):
        raise ValueError("a peephole or coupled LSTM has no PyTorch counterpart (nn.LSTM has neither)")
    if isinstance(cell, ElmanCell) and cell.activation not in ("tanh", "relu"):
        raise ValueError(f"an Elman cell with activation {cell.activation!r} has no PyTorch counterpart "
                         "(nn.RNN's nonlinearity is 'tanh' or 'relu')")
    return cell, dirs


def _array(key: str, value) -> np.ndarray:
    if hasattr(value, "detach"):                      # a torch tensor, read without importing torch
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype.kind != "f":
        raise ValueError(f"state dict key {key!r}: expected a float array, got dtype {a.dtype}")
    return a


def _count_layers(arrays: dict, cell, prefix: str) -> int:
    layers = 0
    while f"weight_ih_l{layers}" in arrays:
        layers += 1
    if not layers:
        raise ValueError(f"state dict has no {prefix}weight_ih_l0: not the weights of a {_MODULE[type(cell)]}")
    return layers


def _names(names, count: int) -> list:
    if names is None:
        return [f"rnn{k + 1}" for k in range(count)]
    names = list(names)
    if len(names) != count:
        raise ValueError(f"names: expected {count} rnnc layer names (one per layer and direction), "
                         f"got {len(names)}")
    return names


def _need(arrays: dict, key: str, prefix: str) -> np.ndarray:
    if key not in arrays:
        raise ValueError(f"state dict has no {prefix + key!r}")
    return arrays[key]


def _shaped(arrays: dict, key: str, shape: tuple, prefix: str, zeros=None) -> np.ndarray:
    if zeros is not None and key not in arrays:
        return np.zeros(shape, zeros)                   # a module built with bias=False
    a = _need(arrays, key, prefix)
    if a.shape != shape:
        raise ValueError(f"state dict key {prefix + key!r}: expected shape {shape}, got {a.shape} (a different "
                         "hidden size, gate count or input size?)")
    return a


def _param(params: dict, name: str) -> np.ndarray:
    if name not in params:
        raise ValueError(f"no param {name!r} in the params given (names: rnnc's layer names, e.g. 'rnn1')")
    return np.asarray(params[name])
