"""``Classifier``: layers + input shape, built as a model with input ``x``, integer label ``y``, outputs
``logits`` / ``probs`` and the loss :math:`L = \\frac{1}{B}\\sum_b -\\log \\mathrm{softmax}(z_b)_{y_b}`."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.dsl.model import Model, check_name
from rnnc.nn.base import Network
from rnnc.nn.layers import Sequential, Softmax
from rnnc.nn.spec import SpecError, from_spec
from rnnc.ops import reshape, softmax, softmax_cross_entropy


@dataclass
class Classifier:
    """A classifier of per-sample inputs of ``input_shape`` into ``classes`` classes.

    A final :class:`Softmax` layer is applied for the ``probs`` output; the loss uses the logits before it
    (cross-entropy of the softmax, computed stably). ``build(train)`` returns the :class:`Network` of the
    training or the evaluation variant; both share param names. ``sync_batchnorm``: see :class:`Network`.
    """

    layers: tuple
    input_shape: tuple
    name: str = "classifier"

    def build(self, train: bool = True, sync_batchnorm: bool = False) -> Network:
        net = Network(Model(self.name), train=train, sync_batchnorm=sync_batchnorm)
        m = net.model
        x = m.input("x", tuple(self.input_shape), axes=())
        y = m.input("y", (), dtype="int", axes=())
        layers = list(self.layers)
        if layers and isinstance(layers[-1], Softmax):
            layers = layers[:-1]
        logits = Sequential(tuple(layers)).build(net, x)
        if len(logits.shape) != 1:
            logits = reshape(logits, (int(np.prod(logits.shape)),))
        m.output("logits", logits)
        m.output("probs", softmax(logits))
        m.loss(softmax_cross_entropy(logits, y))
        return net

    def spec(self) -> dict:
        return {"kind": "Classifier", "name": self.name, "input_shape": list(self.input_shape),
                "layers": [layer.spec() for layer in self.layers]}

    @classmethod
    def from_spec(cls, spec: dict) -> Classifier:
        """Rebuild a classifier from :meth:`spec`; a malformed spec raises :class:`~rnnc.nn.SpecError` naming the
        field (``layers[1].units``)."""
        if not isinstance(spec, dict) or spec.get("kind") != "Classifier":
            raise SpecError("kind: not a Classifier spec")
        shape = spec.get("input_shape")
        if not isinstance(shape, list) or not shape or not all(_is_int(s) and s >= 1 for s in shape):
            raise SpecError(f"input_shape: expected a list of ints >= 1, got {shape!r}")
        name = spec.get("name", "classifier")
        try:
            check_name(name, "model")
        except ValueError:
            raise SpecError(f"name: {name!r} is not a valid model name (a Python identifier, not a keyword, "
                            "without a leading '__')") from None
        layers = spec.get("layers")
        if not isinstance(layers, list):
            raise SpecError(f"layers: expected a list of layer specs, got {type(layers).__name__}")
        return cls(tuple(from_spec(s, f"layers[{k}]") for k, s in enumerate(layers)), tuple(shape), name)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
