"""A character-level LSTM language model trained on the Python standard library's own source.

The lecture trained 3 stacked layers of 512 LSTM units on a LaTeX textbook (and Karpathy on Linux's C
source); here the text is every machine's ``os.path.dirname(os.__file__)/*.py``, and the network is sized for
a CPU; it trains and samples compiled (``rc.compile``). For layers :math:`l = 1..L`
(:math:`x^0_t = \\mathrm{onehot}(c_t)`):

.. math::

    (h^l_t, c^l_t) = \\mathrm{LSTM}_l(x^{l-1}_t, h^l_{t-1}, c^l_{t-1}), \\qquad x^l_t = h^l_t, \\qquad
    p_t = \\mathrm{softmax}(W_o h^L_t + b_o), \\qquad L = -\\sum_t \\log p_t[c_{t+1}]

With the defaults (3 x 64 units, 600 steps of 16 x 32 characters) the loss falls from 4.0 to about 1.8 nats per
character, and samples at temperature 0.8 read like ``if gade neulators ...`` / ``self.__semtiter(...)``:
indentation, ``self.``, ``return``, brackets — Python-shaped, if not Python.

Training is truncated BPTT done the lecture's way: the text is cut into ``B`` parallel streams, read ``T``
characters at a time; the state at the end of a window is the initial state of the next (model inputs
``h1_0, c1_0, ...`` via ``m.initial``, outputs ``h1_T, c1_T, ...`` via ``h.last(t)``), and within a window the
gradient is ``rc.grad(m, truncate=(k1, k2))``, computed by one compiled kernel (loss, gradients and the final
states). Sampling is ``rc.compile(m, feedback={"x": "logits"}).generate(...)``: the compiled ``step`` kernel
reads the prompt one character at a time, carrying the state, then draws each next character from
:math:`p \\propto \\exp(\\log p / \\tau)` and feeds it back (see ``docs/generation.md``).

    python examples/char_lstm.py                        # 600 steps on 2 cores; samples at the end
    python examples/char_lstm.py --quick                # the CI-sized run (seconds once compiled)
                                                        # samples and losses go to out/char_lstm (--out)
    rnnc train examples/char_lstm.py --steps 600 --save lm.npz
    rnnc predict examples/char_lstm.py --params lm.npz --prompt "def "
"""
from __future__ import annotations

import argparse
import glob
import os

import numpy as np

import rnnc as rc
from rnnc import t
from rnnc.nn import LSTMCell, network
from rnnc.train import Adam, clip_global_norm
from rnnc.train.engine import CompiledEngine

CHARS = "\n" + "".join(chr(k) for k in range(32, 127))    # 96 symbols; anything else reads as "?"
INDEX = {ch: k for k, ch in enumerate(CHARS)}
FULL = {"layers": 3, "hidden": 64, "seq": 32, "batch": 16, "truncate": (16, 16), "steps": 600, "lr": 1e-2}
TEMPERATURES = (0.5, 0.8, 1.0)
OUT = os.path.join("out", "char_lstm")            # under the working folder
QUICK = {"layers": 2, "hidden": 32, "seq": 16, "batch": 8, "truncate": (8, 8), "steps": 40, "lr": 1e-2}


def build(layers: int = 3, hidden: int = 64) -> rc.Model:
    """The stacked LSTM language model, with each layer's initial state as an input and final state as output."""
    m = rc.Model("char_lstm")
    net = network(m)
    x = m.input("x", (), dtype="int")         # character indices (T, B)
    y = m.input("y", (), dtype="int")         # the next characters
    inp = rc.one_hot(x[t], len(CHARS))
    for k in range(1, layers + 1):
        cell = LSTMCell(hidden, forget_bias=1.0)
        p = cell.declare(net, f"lstm{k}", inp.shape[0])
        h, c = m.signal(f"h{k}", hidden), m.signal(f"c{k}", hidden)
        m.initial(h, m.input(f"h{k}_0", hidden, axes=()))
        m.initial(c, m.input(f"c{k}_0", hidden, axes=()))
        h[t], c[t] = cell.step(p, inp, (h[t - 1], c[t - 1]))
        m.output(f"h{k}_T", h.last(t))
        m.output(f"c{k}_T", c.last(t))
        inp = h[t]
    Wo = m.param("Wo", (len(CHARS), hidden))
    bo = m.param("bo", len(CHARS), init="zeros")
    logits = Wo @ inp + bo
    m.output("logits", logits)
    m.loss(rc.softmax_cross_entropy(logits, y[t]))
    return m


def corpus(max_chars: int = 2_000_000) -> np.ndarray:
    """The standard library's top-level ``.py`` files (sorted, so every machine reads the same kind of text)."""
    parts, total = [], 0
    for path in sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py"))):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    text = "".join(parts)[:max_chars]
    return np.array([INDEX.get(ch, INDEX["?"]) for ch in text], dtype=np.int64)


def decode(indices) -> str:
    return "".join(CHARS[int(k)] for k in indices)


def zero_state(model: rc.Model, batch: int) -> dict:
    """Zeros for every ``hK_0`` / ``cK_0`` input."""
    return {name: np.zeros((batch, *node.shape)) for name, node in model.graph.inputs.items()
            if name.endswith("_0")}


def next_state(model: rc.Model, outputs: dict) -> dict:
    """The initial state of the next window: each ``hK_T`` output becomes the ``hK_0`` input."""
    return {name: np.asarray(outputs[name[:-2] + "_T"]) for name in zero_state(model, 1)}


def sample(model, params, prompt: str = "\n", length: int = 200, temperature: float = 0.7, seed: int = 0,
           top_k: int | None = None) -> str:
    """Feed ``prompt``, then draw ``length`` characters one at a time from :math:`p^{1/\\tau}` (renormalised),
    by the compiled step kernel. The same ``seed`` gives the same text."""
    f = rc.compile(model, dtype=str(np.asarray(params["Wo"]).dtype), feedback={"x": "logits"})
    prime = np.array([INDEX.get(ch, INDEX["?"]) for ch in prompt] or [INDEX["\n"]])
    ids = f.generate(params, prime, length, temperature=temperature, top_k=top_k, seed=seed,
                     inputs=zero_state(model, 1))
    return prompt + decode(ids[len(prime):])


def train(steps: int | None = None, seed: int = 0, save: str | None = None, quick: bool = False,
          samples: int = 3, log=print, **overrides) -> dict:
    """Truncated-BPTT training on parallel streams of the corpus; returns ``{"params", "losses", "samples"}``.

    ``losses`` are mean per-character cross-entropies (nats) per step; ``log(96) = 4.56`` is a uniform guess.
    """
    cfg = {**(QUICK if quick else FULL), **overrides}
    steps = steps or cfg["steps"]
    T, B = cfg["seq"], cfg["batch"]
    model = build(cfg["layers"], cfg["hidden"])
    engine = CompiledEngine(model, "float32", truncate=tuple(cfg["truncate"]))   # loss, grads, final states
    params = model.init_params(seed=seed, dtype="float32")
    text = corpus(max_chars=(steps * T + 1) * B if quick else 2_000_000)
    stream = len(text) // B
    streams = text[: stream * B].reshape(B, stream).T               # (stream length, B)
    opt, state, losses = Adam(lr=cfg["lr"]), zero_state(model, B), []
    for step in range(steps):
        start = (step * T) % max(stream - T - 1, 1)
        if start < T:
            state = zero_state(model, B)                               # wrapped around: a fresh start
        batch = {"x": streams[start:start + T], "y": streams[start + 1:start + T + 1], **state}
        res = engine.loss_and_grad(batch, params)
        grads, _ = clip_global_norm(res.grads, 5.0)
        opt.step(params, grads)
        state = next_state(model, res.outputs)
        losses.append(float(res.loss) / T)
        if (step + 1) % max(steps // 5, 1) == 0:
            log(f"step {step + 1:5d}  loss/char {np.mean(losses[-10:]):.3f} nats")
    texts = [sample(model, params, "def ", 120 if quick else 300, temp, seed)
             for temp in TEMPERATURES[:samples]]
    for temp, s in zip(TEMPERATURES, texts):
        log(f"--- sample, temperature {temp}:\n{s}")
    if save:
        np.savez(save, **params)
    return {"params": params, "losses": losses, "samples": texts, "config": cfg}


def predict(params: dict, prompt: str = "def ", length: int = 300, temperature: float = 0.7) -> str:
    """A sample continuing ``prompt`` from saved params (the layer count and size are read from them)."""
    layers = sum(1 for k in params if k.startswith("lstm") and k.endswith("_U"))
    hidden = params["Wo"].shape[1]
    return sample(build(layers, hidden), params, prompt, length, temperature)


def bench_peers(inputs: dict, params: dict) -> dict:
    """The same loss and gradient in PyTorch (``nn.LSTM``) and JAX (``lax.scan``, jitted), where installed.

    ``rnnc bench`` times these next to rnnc's kernels. Each callable returns the loss (a float) so callers can
    check that all systems compute the same thing. rnnc's one bias per layer is PyTorch's ``b_ih`` (``b_hh`` = 0).
    """
    layers = sum(1 for k in params if k.startswith("lstm") and k.endswith("_U"))
    peers = {}
    try:
        peers["pytorch"] = _torch_peer(inputs, params, layers)
    except ImportError:
        pass
    try:
        peers["jax"] = _jax_peer(inputs, params, layers)
    except ImportError:
        pass
    return peers


def _torch_peer(inputs, params, layers):
    import torch

    dtype = torch.float64 if params["Wo"].dtype == np.float64 else torch.float32
    hidden = params["Wo"].shape[1]
    lstm = torch.nn.LSTM(len(CHARS), hidden, num_layers=layers).to(dtype)
    with torch.no_grad():
        for k in range(layers):
            getattr(lstm, f"weight_ih_l{k}").copy_(torch.as_tensor(params[f"lstm{k + 1}_U"]))
            getattr(lstm, f"weight_hh_l{k}").copy_(torch.as_tensor(params[f"lstm{k + 1}_W"]))
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.as_tensor(params[f"lstm{k + 1}_b"]))
            getattr(lstm, f"bias_hh_l{k}").zero_()
    wo = torch.tensor(params["Wo"], requires_grad=True)
    bo = torch.tensor(params["bo"], requires_grad=True)
    x = torch.nn.functional.one_hot(torch.as_tensor(inputs["x"]), len(CHARS)).to(dtype)
    y = torch.as_tensor(inputs["y"])
    h0 = torch.stack([torch.as_tensor(inputs[f"h{k + 1}_0"], dtype=dtype) for k in range(layers)])
    c0 = torch.stack([torch.as_tensor(inputs[f"c{k + 1}_0"], dtype=dtype) for k in range(layers)])

    def run() -> float:
        lstm.zero_grad()
        wo.grad = bo.grad = None
        hs, _ = lstm(x, (h0, c0))
        logits = hs @ wo.T + bo
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(CHARS)), y.reshape(-1),
                                                 reduction="sum") / x.shape[1]
        loss.backward()
        return float(loss.detach())

    return run


def _jax_peer(inputs, params, layers):
    import jax
    import jax.numpy as jnp

    def loss_fn(p, x, y, h0, c0):
        seq = jax.nn.one_hot(x, len(CHARS), dtype=p["Wo"].dtype)
        for k in range(layers):
            U, W, b = p[f"lstm{k + 1}_U"], p[f"lstm{k + 1}_W"], p[f"lstm{k + 1}_b"]

            def step(carry, x_t, U=U, W=W, b=b):
                h, c = carry
                i, f, g, o = jnp.split(x_t @ U.T + h @ W.T + b, 4, axis=-1)
                c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
                h = jax.nn.sigmoid(o) * jnp.tanh(c)
                return (h, c), h

            _, seq = jax.lax.scan(step, (h0[k], c0[k]), seq)
        logp = jax.nn.log_softmax(seq @ p["Wo"].T + p["bo"])
        return -jnp.take_along_axis(logp, y[..., None], axis=-1).sum() / x.shape[1]

    fn = jax.jit(jax.value_and_grad(loss_fn))
    args = (params, inputs["x"], inputs["y"],
            np.stack([inputs[f"h{k + 1}_0"] for k in range(layers)]).astype(params["Wo"].dtype),
            np.stack([inputs[f"c{k + 1}_0"] for k in range(layers)]).astype(params["Wo"].dtype))

    def run() -> float:
        loss, grads = fn(*args)
        jax.block_until_ready(grads)
        return float(loss)

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, help="training steps (default 600, or 40 with --quick)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="the small CI configuration")
    ap.add_argument("--out", default=OUT, help=f"folder for samples.txt and losses.txt (default {OUT})")
    ap.add_argument("--save", help="write the trained params to this .npz")
    args = ap.parse_args(argv)
    out = train(args.steps, args.seed, args.save, args.quick)
    print(f"loss/char: first 10 steps {np.mean(out['losses'][:10]):.3f}, last 10 {np.mean(out['losses'][-10:]):.3f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "samples.txt"), "w", encoding="utf-8") as f:
        for temp, text in zip(TEMPERATURES, out["samples"]):
            f.write(f"--- temperature {temp}, seed {args.seed}:\n{text}\n")
    np.savetxt(os.path.join(args.out, "losses.txt"), out["losses"], fmt="%.5f")
    print(f"samples and losses written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
