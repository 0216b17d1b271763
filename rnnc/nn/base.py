"""What every layer shares: the build context (:class:`Network`), the :class:`Layer` base class with its JSON
spec, activations and the whitelist of layer types that a saved spec may name.

Layers are configurations. Calling ``layer(net, x)`` adds the layer's params, signals and equations to
``net.model`` and returns the output node; layers have no numerics of their own.
"""
from __future__ import annotations

import dataclasses
import weakref
from typing import Any

from rnnc.dsl import init as inits
from rnnc.dsl.model import Model
from rnnc.ir.node import Axis, Node
from rnnc.ops import as_node, relu, sigmoid, softmax, tanh

_NETWORKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

ACTIVATIONS = {"tanh": tanh, "relu": relu, "sigmoid": sigmoid, "softmax": softmax,
               "identity": lambda x: x, None: lambda x: x}


def activate(name: str | None, x):
    """Apply an activation by name: ``tanh``, ``relu``, ``sigmoid``, ``softmax``, ``identity`` / None."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of "
                         f"{sorted(k for k in ACTIVATIONS if k)} or None")
    return ACTIVATIONS[name](x)


@dataclasses.dataclass
class BufferSpec:
    """A non-trainable array the trainer keeps (batch-norm running statistics).

    In training mode the model outputs the batch statistic ``stat``; after each step the trainer sets
    :math:`r \\leftarrow (1 - m)\\, r + m\\, s \\cdot c` with ``c = N / (N - 1)`` when ``unbiased`` (``N``
    values per channel: batch size times ``per_sample``). In evaluation mode the buffer is a param of the model.
    """

    shape: tuple
    init: float
    stat: str
    momentum: float
    unbiased: bool = False
    per_sample: int = 1


class Network:
    """The build context of one model: mode (training or evaluation), unique names, buffers, noise inputs.

    ``nn.Network(m, train=False)`` builds the evaluation variant (batch norm reads running statistics,
    dropout is the identity). A plain :class:`~rnnc.Model` passed to a layer gets a training-mode context.
    ``sync_batchnorm=True`` (training mode) builds batch norm with the statistics of the global batch of a
    data-parallel run (:class:`~rnnc.nn.layers.BatchNorm`, :mod:`rnnc.ops.collective`); in one process the
    network computes what the default one does.
    """

    def __init__(self, model: Model | None = None, train: bool = True, name: str = "net",
                 sync_batchnorm: bool = False):
        self.model = model if model is not None else Model(name)
        self.train = bool(train)
        self.sync_batchnorm = bool(sync_batchnorm) and self.train
        self.counts: dict[str, int] = {}
        self.buffers: dict[str, BufferSpec] = {}
        self.noise: dict[str, float] = {}   # dropout mask input name -> drop probability
        _NETWORKS[self.model] = self

    def unique(self, prefix: str) -> str:
        """``conv1``, ``conv2``, ...: a fresh name for a layer's params and signals."""
        self.counts[prefix] = self.counts.get(prefix, 0) + 1
        return f"{prefix}{self.counts[prefix]}"

    def param(self, name: str, shape, init=None) -> Node:
        return self.model.param(name, shape, init=init)


def network(m) -> Network:
    """The :class:`Network` of ``m`` (a Network or a Model; a Model gets a training-mode one)."""
    if isinstance(m, Network):
        return m
    if isinstance(m, Model):
        return _NETWORKS.get(m) or Network(m)
    raise TypeError(f"layers are applied as layer(net, x) with an nn.Network or rc.Model, got {type(m).__name__}")


LAYERS: dict[str, type] = {}
INITS = {c.__name__: c for c in (inits.Constant, inits.Normal, inits.Uniform, inits.GlorotUniform, inits.Kaiming,
                                 inits.Orthogonal, inits.Identity)}


def register_layer(cls):
    """Class decorator: allow ``cls`` in saved specs (only whitelisted types are ever rebuilt)."""
    LAYERS[cls.__name__] = cls
    return cls


def _to_json(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and type(v).__name__ in LAYERS:
        return v.spec()
    if isinstance(v, Axis):
        return v.name
    if isinstance(v, inits.Initializer):
        return {"init": type(v).__name__, **dataclasses.asdict(v)}
    if isinstance(v, (list, tuple)):
        return [_to_json(a) for a in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    raise TypeError(f"cannot save {type(v).__name__} {v!r} in a model spec")


class Layer:
    """Base class of layer configurations (dataclasses). Subclasses implement ``build(net, x) -> node``."""

    prefix = "layer"

    def __call__(self, m, x):
        return self.build(network(m), as_node(x))

    def build(self, net: Network, x: Node) -> Node:
        raise NotImplementedError

    def spec(self) -> dict:
        """A JSON-able description: ``{"layer": type name, field: value, ...}``."""
        return {"layer": type(self).__name__,
                **{f.name: _to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}}
