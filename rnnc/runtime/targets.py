"""``rc.compile``: a model compiled for a target (CPU kernels, CUDA kernels, and the checkpointing plan)."""
from __future__ import annotations

import warnings

from rnnc.runtime.compiled import Compiled
from rnnc.runtime.segments import segmented


def compile(model, target: str = "cpu", dtype: str = "float32", threads: int | None = None,
            verbose: bool = False, feedback: dict | None = None, **grad_options) -> Compiled:  # noqa: A001
    """Compile ``model`` for ``target`` ("cpu"): ``f = rc.compile(m)``; see :class:`Compiled`.

    ``threads``: how many threads a call may use (default: ``NUMBA_NUM_THREADS``, the CPU count unless set).
    A row-local scan (every Elman, LSTM, GRU, bidirectional or ReNet scan) runs as that many blocks of batch
    rows, each a whole time loop on its own thread; products over all steps × batch run as row blocks too; with
    one BLAS thread in every stage. A module with parallel image kernels runs those on that many Numba threads
    (and its scans whole). A module with neither uses BLAS threads per stage: 2 for map stages, for a scan's
    per-step products 1 on batches up to 32, else 2 (``threads`` fixes both). See ``docs/backends.md``.
    ``grad_options`` (``wrt``, ``truncate``, ``checkpoint``) are passed to :func:`rnnc.grad` for
    ``loss_and_grad``. With ``checkpoint=k`` (or ``True``: :math:`k = \\lceil\\sqrt{T}\\rceil`)
    ``loss_and_grad`` keeps the recurrent state every ``k`` steps and recomputes each segment of ``k`` steps
    in a compiled segment kernel on the way back (:mod:`rnnc.runtime.segments`): peak memory
    :math:`O(T/k + k)` steps instead of :math:`O(T)`; a model that plan does not fit (several loop axes,
    lengths, deeper delays, ``truncate=(k1, k2)`` with ``k2 > k1``, ``target="cuda"``) gets the whole-sequence
    kernel, and a
    ``RuntimeWarning`` says why it saves no memory. ``verbose=True`` prints one line on stderr per kernel after
    its first call: which kernel, whether its module was generated or loaded from the cache, and the times.
    ``feedback`` (input name -> output name, e.g. ``{"x": "logits"}``) says which output's distribution is
    sampled and fed back as which input by :meth:`Compiled.generate` (see :mod:`rnnc.runtime.generate`).
    """
    if target == "cuda":            # options scan= and results=: see rnnc.runtime.cuda.CudaCompiled
        if grad_options.get("checkpoint"):
            _no_saving(grad_options["checkpoint"], "target='cuda' runs the whole sequence in one kernel")
        from rnnc.runtime.cuda import CudaCompiled

        return CudaCompiled(model, dtype, feedback=feedback, **grad_options)
    if target != "cpu":
        raise ValueError(f"target must be 'cpu' or 'cuda', got {target!r}")
    compiled = Compiled(model, dtype, threads=threads, verbose=verbose, feedback=feedback, **grad_options)
    if grad_options.get("checkpoint") is not None:
        compiled.segments, refusal = segmented(compiled, grad_options)
        if refusal:
            _no_saving(grad_options["checkpoint"], refusal)
    return compiled


def _no_saving(checkpoint, reason: str) -> None:
    warnings.warn(f"rc.compile(checkpoint={checkpoint!r}): {reason}; the compiled kernel computes the "
                  "checkpointed gradients but keeps every step's values, so it saves no memory; "
                  "rc.interpret(rc.grad(model, checkpoint=...), ...) does", RuntimeWarning, stacklevel=3)
