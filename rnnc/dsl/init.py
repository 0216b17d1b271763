"""Parameter initialisers: seeded, reproducible, chosen by name, value or object.

``init=`` accepts ``"zeros"``, ``"ones"``, ``"normal"``, ``"uniform"``, ``"glorot_uniform"`` (alias
``"xavier"``), ``"kaiming"``, ``"orthogonal"``, ``"identity"``, a number (constant), an array of the
parameter's shape, or an :class:`Initializer`. The default depends on the shape: vectors and scalars start at
zero, square matrices are orthogonal (recurrent weights), other matrices and kernels Glorot-uniform.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rnnc.ir.node import user_line


def _fans(shape) -> tuple[int, int]:
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


class Initializer:
    """Base class: ``init(rng, shape) -> np.ndarray`` (float64; cast by the caller)."""

    def __call__(self, rng: np.random.Generator, shape) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class Constant(Initializer):
    """Every entry equals ``value``."""

    value: float = 0.0

    def __call__(self, rng, shape):
        return np.full(shape, float(self.value))


@dataclass(frozen=True)
class Normal(Initializer):
    """:math:`\\mathcal{N}(0, \\sigma^2)`."""

    std: float = 0.01

    def __call__(self, rng, shape):
        return rng.normal(0.0, self.std, shape)


@dataclass(frozen=True)
class Uniform(Initializer):
    """:math:`U(-a, a)`."""

    limit: float = 0.1

    def __call__(self, rng, shape):
        return rng.uniform(-self.limit, self.limit, shape)


@dataclass(frozen=True)
class GlorotUniform(Initializer):
    """Glorot & Bengio: :math:`U(-a, a)`, :math:`a = g\\sqrt{6 / (n_{in} + n_{out})}`."""

    gain: float = 1.0

    def __call__(self, rng, shape):
        fan_in, fan_out = _fans(shape)
        limit = self.gain * np.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-limit, limit, shape)


Xavier = GlorotUniform


@dataclass(frozen=True)
class Kaiming(Initializer):
    """He et al.: :math:`\\mathcal{N}(0, 2 / n_{in})` (for ReLU layers)."""

    gain: float = float(np.sqrt(2.0))

    def __call__(self, rng, shape):
        fan_in, _ = _fans(shape)
        return rng.normal(0.0, self.gain / np.sqrt(fan_in), shape)


@dataclass(frozen=True)
class Orthogonal(Initializer):
    """A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one, times ``gain``."""

    gain: float = 1.0

    def __call__(self, rng, shape):
        rows, cols = shape[0], int(np.prod(shape[1:]))
        a = rng.normal(0.0, 1.0, (max(rows, cols), min(rows, cols)))
        q, r = np.linalg.qr(a)
        q = q * np.sign(np.diag(r))
        q = q if rows >= cols else q.T
        return self.gain * q[:rows, :cols].reshape(shape)


@dataclass(frozen=True)
class Identity(Initializer):
    """``gain`` times the identity matrix."""

    gain: float = 1.0

    def __call__(self, rng, shape):
        if len(shape) != 2:
            raise ValueError(f"identity init needs a matrix, got shape {shape}")
        return self.gain * np.eye(*shape)


NAMED = {"zeros": Constant(0.0), "ones": Constant(1.0), "normal": Normal(), "uniform": Uniform(),
         "glorot_uniform": GlorotUniform(), "xavier": GlorotUniform(), "kaiming": Kaiming(),
         "orthogonal": Orthogonal(), "identity": Identity()}


def default_init(shape) -> Initializer:
    if len(shape) <= 1:
        return NAMED["zeros"]
    if len(shape) == 2 and shape[0] == shape[1]:
        return NAMED["orthogonal"]
    return NAMED["glorot_uniform"]


def resolve(init, shape, name: str):
    """Check an ``init=`` argument and return an Initializer or a fixed array."""
    if init is None:
        return default_init(shape)
    if isinstance(init, str):
        if init not in NAMED:
            raise ValueError(f"param {name!r}: unknown init {init!r}; expected one of {sorted(NAMED)} "
                             f"at {user_line()}")
        init = NAMED[init]
    if isinstance(init, Initializer):
        if isinstance(init, Identity) and len(shape) != 2 or isinstance(init, Orthogonal) and not shape:
            need = "a matrix" if isinstance(init, Identity) else "at least one dimension"
            raise ValueError(f"param {name!r}: {type(init).__name__} init needs {need}, got shape {tuple(shape)} "
                             f"at {user_line()}")
        return init
    if isinstance(init, (int, float, np.integer, np.floating)) and not isinstance(init, (bool, np.bool_)):
        return Constant(float(init))
    try:
        arr = np.asarray(init)
    except (ValueError, TypeError):
        arr = np.asarray(None)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"param {name!r}: init must be a name, a number, an array or an rc.init initialiser, "
                        f"got {type(init).__name__} at {user_line()}")
    if arr.shape != tuple(shape):
        raise ValueError(f"param {name!r}: init array has shape {arr.shape}, expected {tuple(shape)} "
                         f"at {user_line()}")
    return arr


def initial_value(spec, rng: np.random.Generator, shape, dtype) -> np.ndarray:
    if isinstance(spec, np.ndarray):
        return spec.astype(dtype, copy=True)
    return np.asarray(spec(rng, tuple(shape)), dtype=dtype)
