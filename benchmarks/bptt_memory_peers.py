"""One variant of ``bptt_memory.py --compiled``, run in its own process: the same LSTM and loss in rnnc (compiled,
``checkpoint=k``), PyTorch (``nn.LSTM``, ``torch.utils.checkpoint`` over segments of ``k`` steps) and JAX
(``lax.scan``, ``jax.checkpoint`` around each segment's inner scan).

Every variant computes :math:`L = \\frac{1}{B}\\sum_b\\sum_t \\mathrm{CE}(V h_t^{(b)}, y_t^{(b)})` and its gradient
w.r.t. every weight, from the same float32 data and zero initial state.
"""
from __future__ import annotations

import time
import tracemalloc

import numpy as np

CLASSES = 10


def measure_variant(args, lstm) -> dict:
    """Build the data and the runner of ``args.variant`` ("lib:k", k = 0 for none), then measure (see
    ``bptt_memory.compiled_table``)."""
    lib, k = args.variant.split(":")
    k = int(k) or None
    rng = np.random.default_rng(0)
    data = {"x": rng.normal(size=(args.T, args.batch, args.inputs)).astype(np.float32),
            "y": rng.integers(0, CLASSES, size=(args.T, args.batch)).astype(np.int64)}
    step = {"rnnc": _rnnc, "torch": _torch, "jax": _jax}[lib](args, k, data, lstm)
    base = _status("VmRSS")
    _reset_peak()
    tracemalloc.start()
    loss = step()
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    peak = _status("VmHWM")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"rss_mb": (peak - base) / 1e6, "traced_mb": traced / 1e6, "seconds": float(np.median(times)),
            "loss": float(loss)}


def _status(field: str) -> int:
    """A ``/proc/self/status`` size in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Reset VmHWM to the current resident set (Linux: ``5`` to ``/proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _rnnc(args, k, data, lstm):
    import rnnc as rc

    m = lstm(args.inputs, args.hidden, CLASSES)
    params = m.init_params(seed=0, dtype="float32")
    f = rc.compile(m, dtype="float32", threads=args.threads, **({"checkpoint": k} if k else {}))
    short = {name: v[: 2 * k + 1 if k else 5] for name, v in data.items()}
    f.loss_and_grad(short, params)                         # Numba compiles (or loads) every kernel
    for kernel in f._kernels.values():                     # ... whose work buffers the measured call allocates
        kernel._buffers.clear()
    return lambda: f.loss_and_grad(data, params)[0]


def _torch(args, k, data, lstm):
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cell = torch.nn.LSTM(args.inputs, args.hidden)
    head = torch.nn.Linear(args.hidden, CLASSES, bias=False)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    B, T = args.batch, args.T

    def segment(xs, ys, h, c):
        out, (h, c) = cell(xs, (h, c))
        loss = F.cross_entropy(head(out).reshape(-1, CLASSES), ys.reshape(-1), reduction="sum") / B
        return loss, h, c

    def step(steps=T):
        for p in list(cell.parameters()) + list(head.parameters()):
            p.grad = None
        h = c = torch.zeros(1, B, args.hidden)
        if k is None:
            loss = segment(x[:steps], y[:steps], h, c)[0]
        else:
            loss = 0.0
            for s in range(0, steps, k):
                part, h, c = checkpoint(segment, x[s:s + k], y[s:s + k], h, c, use_reentrant=False)
                loss = loss + part
        loss.backward()
        return loss.item()

    step(2 * (k or 2) + 1)
    return step


def _jax(args, k, data, lstm):
    import jax
    import jax.numpy as jnp

    H, B, T = args.hidden, args.batch, args.T
    if k is not None and T % k:
        raise ValueError(f"the JAX variant reshapes T = {T} into segments of {k}: k must divide T")
    rng = np.random.default_rng(0)
    params = {"Wx": rng.normal(scale=0.1, size=(args.inputs, 4 * H)), "Wh": rng.normal(scale=0.1, size=(H, 4 * H)),
              "b": np.zeros(4 * H), "V": rng.normal(scale=0.1, size=(H, CLASSES))}
    params = {name: jnp.asarray(v, jnp.float32) for name, v in params.items()}

    def cell(p, carry, xy):
        h, c = carry
        x, y = xy
        z = x @ p["Wx"] + h @ p["Wh"] + p["b"]
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        logp = jax.nn.log_softmax(h @ p["V"])
        return (h, c), -jnp.take_along_axis(logp, y[:, None], axis=1).sum()

    def loss_fn(p, x, y):
        zero = (jnp.zeros((B, H), jnp.float32), jnp.zeros((B, H), jnp.float32))
        if k is None:
            return jax.lax.scan(lambda cr, xy: cell(p, cr, xy), zero, (x, y))[1].sum() / B

        @jax.checkpoint
        def segment(carry, xy):
            carry, losses = jax.lax.scan(lambda cr, step: cell(p, cr, step), carry, xy)
            return carry, losses.sum()

        xs, ys = x.reshape(T // k, k, B, -1), y.reshape(T // k, k, B)
        return jax.lax.scan(segment, zero, (xs, ys))[1].sum() / B

    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"], jnp.int32)
    run = jax.jit(jax.value_and_grad(loss_fn)).lower(params, x, y).compile()     # compiled before the baseline

    def step():
        loss, grads = run(params, x, y)
        jax.block_until_ready(grads)
        return float(loss)

    return step
