"""The same cells in PyTorch (CPU autograd) and JAX (``jit(grad)`` of ``lax.scan``), with the same loss
(per-step MSE against ``y``, summed over time, mean over the batch) and the same gradients (weights, biases
and ``x``). Each ``make_*`` returns ``(train_step, inference)`` callables or raises ImportError."""
from __future__ import annotations

import numpy as np


def _torch_cell(torch, cell, I, H):
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    g = torch.Generator().manual_seed(0)
    U = (torch.randn(gates * H, I, generator=g) * 0.1).requires_grad_()
    W = (torch.randn(gates * H, H, generator=g) * 0.1).requires_grad_()
    b = torch.zeros(gates * H, requires_grad=True)
    return U, W, b


def make_torch(cell, T, B, I, H):
    import torch

    torch.set_num_threads(2)
    U, W, b = _torch_cell(torch, cell, I, H)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(T, B, I)).astype(np.float32), requires_grad=True)
    y = torch.tensor(rng.normal(size=(T, B, H)).astype(np.float32))

    def run(x):
        xs = x @ U.T + b                     # hoisted input products (as a hand-written torch cell would)
        h = torch.zeros(B, H)
        c = torch.zeros(B, H)
        hs = []
        for k in range(T):
            if cell == "rnn":
                h = torch.tanh(xs[k] + h @ W.T)
            elif cell == "lstm":
                z = xs[k] + h @ W.T
                i, f, gg, o = z.chunk(4, 1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
            else:
                zx, zh = xs[k], h @ W.T
                z = torch.sigmoid(zx[:, :H] + zh[:, :H])
                r = torch.sigmoid(zx[:, H:2 * H] + zh[:, H:2 * H])
                n = torch.tanh(zx[:, 2 * H:] + r * zh[:, 2 * H:])
                h = (1 - z) * n + z * h
            hs.append(h)
        return torch.stack(hs)

    def train():
        out = run(x)
        loss = ((out - y) ** 2).mean(-1).sum() / B
        loss.backward()
        for p in (U, W, b, x):
            p.grad = None
        return float(loss.detach())

    def infer():
        with torch.no_grad():
            return run(x)
    return train, infer


def make_torch_builtin(cell, T, B, I, H):
    """PyTorch's own fused layers (``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU``: oneDNN kernels on CPU)."""
    import torch

    torch.set_num_threads(2)
    net = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.normal(size=(T, B, I)).astype(np.float32), requires_grad=True)
    y = torch.tensor(rng.normal(size=(T, B, H)).astype(np.float32))

    def train():
        out, _ = net(x)
        loss = ((out - y) ** 2).mean(-1).sum() / B
        loss.backward()
        net.zero_grad(set_to_none=True)
        x.grad = None
        return float(loss.detach())

    def infer():
        with torch.no_grad():
            return net(x)[0]
    return train, infer


def make_jax(cell, T, B, I, H):
    import jax
    import jax.numpy as jnp

    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    rng = np.random.default_rng(0)
    P = {"U": jnp.asarray(rng.normal(size=(gates * H, I)).astype(np.float32) * 0.1),
         "W": jnp.asarray(rng.normal(size=(gates * H, H)).astype(np.float32) * 0.1),
         "b": jnp.zeros(gates * H, jnp.float32)}
    x = jnp.asarray(rng.normal(size=(T, B, I)).astype(np.float32))
    y = jnp.asarray(rng.normal(size=(T, B, H)).astype(np.float32))

    def step(p, carry, xk):
        h, c = carry
        if cell == "rnn":
            h = jnp.tanh(xk + h @ p["W"].T)
        elif cell == "lstm":
            i, f, g, o = jnp.split(xk + h @ p["W"].T, 4, 1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
        else:
            zh = h @ p["W"].T
            z = jax.nn.sigmoid(xk[:, :H] + zh[:, :H])
            r = jax.nn.sigmoid(xk[:, H:2 * H] + zh[:, H:2 * H])
            n = jnp.tanh(xk[:, 2 * H:] + r * zh[:, 2 * H:])
            h = (1 - z) * n + z * h
        return (h, c), h

    def run(p, x):
        xs = x @ p["U"].T + p["b"]
        zero = jnp.zeros((B, H), jnp.float32)
        return jax.lax.scan(lambda cr, xk: step(p, cr, xk), (zero, zero), xs)[1]

    def loss(p, x):
        return (((run(p, x) - y) ** 2).mean(-1).sum()) / B

    grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    fwd = jax.jit(run)

    def train():
        v, g = grad(P, x)
        jax.block_until_ready(g)
        return float(v)

    def infer():
        return jax.block_until_ready(fwd(P, x))
    return train, infer
