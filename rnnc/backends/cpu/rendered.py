"""What rendering a graph gives the runtime: the buffer plan (:class:`BufSpec`) and :class:`Rendered`, and the
options a renderer runs with (:class:`RenderOptions`), all plain frozen data."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BufSpec:
    """A buffer the runtime allocates: ``dims`` (axes / BATCH) then ``shape``; ``extra`` more entries along
    ``dims[0]``; or, with ``view = (base, start)``, no storage of its own but ``base[start:start + n]`` along
    ``dims[0]``: a value and its lagged reference sharing one array (:func:`rnnc.backends.cpu.refs.plan_lags`), or a
    buffer taking the storage of one of the same type that is dead by then (``start`` 0,
    :func:`rnnc.backends.cpu.reuse.share_dead`)."""

    var: str
    dims: tuple
    shape: tuple
    kind: str = "f"
    extra: int = 0
    view: tuple = ()


@dataclass
class Rendered:
    """What rendering gives the runtime; ``parallel`` says ``run`` calls pieces on several threads (split
    scans, row-blocked products, parallel kernels), ``prange`` that some of them are image kernels on Numba's
    threads (see :meth:`rnnc.runtime.kernel.CompiledKernel.blas_threads`)."""

    source: str
    args: list                   # argument names of run(), in order
    sizes: list                  # (var, Axis or BATCH) size arguments
    leaves: dict                 # var -> leaf node (inputs, params, lengths)
    buffers: list                # BufSpec to allocate
    results: dict = field(default_factory=dict)   # node -> var of its full buffer
    hist: dict = field(default_factory=dict)      # value name -> (hist var, started var, depth) (stream)
    parallel: bool = False
    prange: bool = False
    sites: list = field(default_factory=list)     # (line number, file:line) of comment lines naming a node
    uses: list = field(default_factory=list)      # names each statement of run() uses, in order (module.py)


@dataclass(frozen=True)
class RenderOptions:
    """How a :class:`~rnnc.backends.cpu.render.Renderer` renders; :data:`KERNEL` is what the CPU kernel uses,
    :data:`PLAIN` (every option off) what other renderers reuse the class and its templates with.

    ``alias_slices``: slices and concats as offset views (:mod:`rnnc.backends.cpu.placement`);
    ``numpy_prologue``: axis-free reshuffles of parameters as numpy statements in ``run``
    (:mod:`rnnc.backends.cpu.prologue`); ``vector_math``: tanh / sigmoid through vectorisable helpers
    (float32: no libm call); ``split_scans``: row-local scans as row blocks of the batch on several threads;
    ``lag_views``: a scan's kept reference ``s[t-k]`` shares its value's array (:mod:`rnnc.backends.cpu.refs`);
    ``parallel_gemms``: a map stage's products as row blocks on several threads
    (:mod:`rnnc.backends.cpu.kernels_linalg`); ``reuse_buffers``: a buffer born after another one of its type died
    takes its storage (:mod:`rnnc.backends.cpu.reuse`); ``packed_steps``: a scan step's product on a
    parameter (or prologue value) reads it packed once per call (:mod:`rnnc.backends.cpu.kernels_packed`).
    """

    alias_slices: bool = False
    numpy_prologue: bool = False
    vector_math: bool = False
    split_scans: bool = False
    lag_views: bool = False
    parallel_gemms: bool = False
    reuse_buffers: bool = False
    packed_steps: bool = False


PLAIN = RenderOptions()
KERNEL = RenderOptions(alias_slices=True, numpy_prologue=True, vector_math=True, split_scans=True, lag_views=True,
                       parallel_gemms=True, reuse_buffers=True, packed_steps=True)
