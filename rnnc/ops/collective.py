"""Collective ops: a value reduced across the ranks of a data-parallel run *inside* one program (as JAX's
``lax.psum`` inside a jitted function), and the hooks through which a run executes them.

``cross_rank_mean(x)`` is, on rank ``r`` of ``R`` ranks holding ``n_r`` rows of a global batch of
:math:`n = \\sum_r n_r` rows, the rows-weighted mean over the ranks

.. math:: \\operatorname{crm}(x)_r = \\sum_{r'} \\frac{n_{r'}}{n}\\, x_{r'}

(the same value on every rank). In one process (``R = 1``) it is the identity. As a plain loop::

    def cross_rank_mean(x_of_rank, rows_of_rank):
        n = sum(rows_of_rank)
        total = sum(rows * x for x, rows in zip(x_of_rank, rows_of_rank))
        return [total / n for _ in x_of_rank]            # one copy per rank

A batch statistic becomes the global batch's by it: with per-rank means :math:`\\mu_r` of equally sized rows,
:math:`\\operatorname{crm}(\\mu) = \\frac1n \\sum_r n_r \\mu_r` is the global mean.

**Its VJP is itself.** Every rank's loss :math:`L_r` is the mean over its own rows, and
:class:`~rnnc.train.distributed.DataParallel` weights rank ``r``'s gradient by :math:`w_r = n_r / n` (the global
loss is :math:`L = \\sum_r w_r L_r`). The output :math:`y = \\sum_{r'} w_{r'} x_{r'}` is used the same way on
every rank, so :math:`\\partial L / \\partial x_r = w_r \\sum_{r'} w_{r'} \\bar y_{r'}` with :math:`\\bar y_{r'}`
rank ``r'``'s adjoint of its own loss. Rank ``r``'s gradient is multiplied by :math:`w_r` afterwards, so its
program must compute :math:`\\bar x_r = \\sum_{r'} w_{r'} \\bar y_{r'} = \\operatorname{crm}(\\bar y)`: the
same collective on the adjoints. (A plain sum would need :math:`\\bar x_r = \\frac{1}{n_r} \\sum_{r'} n_{r'}
\\bar y_{r'}` under this weighting, and the counts in the graph.)

**Hooks.** The numpy reference (the interpreter) and the compiled CPU kernel's ``run`` (between two stage
functions, ``ck.cross_rank_mean(v12)``) both call :func:`cross_rank_mean_hook`, which calls the reduction that
:func:`across_ranks` installed for the current step (an MPI ``Allreduce``), or leaves the value as it is
(one process). :func:`gradients_ready` is the second hook: a compiled gradient kernel announces, right after the
stage that last writes them, which parameters' gradients are complete, so that their all-reduce can start while
the rest of the backward pass runs.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np

from rnnc.ops.registry import make, register, shape_error, shared_axes

_HOOKS: dict = {"mean": None, "ready": None}


@contextlib.contextmanager
def across_ranks(mean: Callable | None = None, ready: Callable | None = None):
    """Within this block, ``cross_rank_mean`` reduces through ``mean(x) -> array`` (every rank calls it in the
    same order, once per collective node and call) and gradient kernels call ``ready({name: gradient array})``
    as parameters' gradients become complete (the arrays are the kernel's buffers: copy what you keep). Outside
    it, or with None, the collective is the identity and nobody is told."""
    saved = dict(_HOOKS)
    _HOOKS.update(mean=mean, ready=ready)
    try:
        yield
    finally:
        _HOOKS.update(saved)


def cross_rank_mean_hook(x: np.ndarray) -> np.ndarray:
    """The collective on one rank's array: through the installed reduction, else ``x`` itself (one process);
    the result in ``x``'s dtype and shape, ``x`` is not changed."""
    reduce = _HOOKS["mean"]
    if reduce is None:
        return np.array(x, copy=True)
    return np.asarray(reduce(np.asarray(x)), dtype=np.asarray(x).dtype).reshape(np.shape(x))


def cross_rank_mean_inplace(buf: np.ndarray) -> None:
    """The compiled kernel's call (``ck.cross_rank_mean(v12)`` in ``run``): reduce ``buf`` in place."""
    if _HOOKS["mean"] is not None:
        buf[...] = cross_rank_mean_hook(buf)


def ready_listener() -> Callable | None:
    """The ``ready`` hook of the current :func:`across_ranks` block (None outside one)."""
    return _HOOKS["ready"]


def _shape(inputs, attrs):
    (x,) = inputs
    if x.axes or x.batched:
        raise shape_error("cross_rank_mean", inputs, "reduces a value shared by every sample and loop index "
                          "(a batch statistic); reduce it over the batch first")
    return x.shape, "float"


def _numpy(node, x):
    return cross_rank_mean_hook(x)


def _vjp(node, g):
    return (make("cross_rank_mean", [g]),)


register("cross_rank_mean", _shape, _numpy, _vjp, axes=shared_axes, arity=1, collective=True)


def cross_rank_mean(x):
    """The rows-weighted mean of ``x`` over the ranks, :math:`\\sum_r (n_r / n) x_r` (the identity in one
    process); ``x`` must be shared by every sample and loop index (see the module docstring)."""
    return make("cross_rank_mean", [x])
