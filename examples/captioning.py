"""Image captioning with soft attention (CS231n lecture), written in the DSL and trained on Fashion-MNIST canvases.

A canvas is a 2 x 2 grid of 28 x 28 slots (56 x 56 pixels), two to four of them holding official Fashion-MNIST
images (how many, which slots and which images drawn from a seed); its caption names the items in reading order
(left to right, top row first), then ``<end>``, padded with ``<end>`` to five tokens. The training
and validation canvases use the training images only (validation the last 5,000), the test canvases only the
official test images.

Two models are trained in the same run, on the same batches:

* **attention**: a CNN encoder gives ``F`` (P = 4 x 4 positions x C channels); at each word the LSTM decoder
  scores every position, ``e_t = v . tanh(F W_f + W_h h_{t-1})``, weighs them ``a_t = softmax(e_t)``, reads
  ``z_t = sum_p a_t[p] F[p]`` and steps ``h_t = LSTM(h_{t-1}, [E[w_t]; z_t])``; logits from ``[h_t; z_t]``.
* **baseline** (no attention, the lecture's first captioning model): ``h_{-1} = tanh(W_i vec(F) + b_i)`` and
  ``h_t = LSTM(h_{t-1}, E[w_t])``.

Training is teacher-forced (the decoder reads ``<start>`` and the true words), compiled; decoding is greedy
(``f.generate``) and beam search of width k (a loop over ``f.step``, one state row per beam).

    python examples/captioning.py train                        # the full run, about 12 min on 2 loaded cores
    python examples/captioning.py train --quick                # CI: tiny models, a few hundred canvases
    python examples/captioning.py train --out docs/img         # the pictures of docs/captioning.md
    python examples/captioning.py sample canvas.png            # write a test canvas
    python examples/captioning.py caption canvas.png           # greedy and beam captions, attention maps
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import fashion_mnist  # noqa: E402

import rnnc as rc  # noqa: E402
import rnnc.nn as nn  # noqa: E402
from rnnc import t  # noqa: E402
from rnnc.data import Vocab  # noqa: E402
from rnnc.ops.linalg import transpose  # noqa: E402
from rnnc.train import Adam, clip_global_norm  # noqa: E402

SLOTS, SIDE = 4, 28                                   # a 2 x 2 grid of 28 x 28 slots
ITEMS = (2, 3, 4)                                     # items on a canvas, drawn uniformly
CANVAS = (1, 2 * SIDE, 2 * SIDE)                      # one channel, 56 x 56
GRID = (4, 4)                                         # the encoder's positions (rows, columns): 2 x 2 per slot
WORDS = tuple(c.lower().replace(" ", "-") for c in fashion_mnist.CLASSES)
VOCAB = Vocab(WORDS + ("<start>",), level="word")
START, END = VOCAB.ids["<start>"], Vocab.end_id
STEPS = max(ITEMS) + 1                                # up to four words, then <end> (padded with <end>)
KINDS = ("attention", "baseline")
SIZES = {"hidden": 64, "embed": 16, "att": 32, "channels": (8, 16, 32)}    # the full run
QUICK_SIZES = {"hidden": 16, "embed": 8, "att": 8, "channels": (8,)}  # --quick and the tests


# ----------------------------------------------------------------------------- data


def canvases(images: np.ndarray, labels: np.ndarray, n: int, seed: int) -> dict:
    """``n`` canvases from ``images`` (N, 1, 28, 28): ``img`` (n, 1, 56, 56) float32, ``slots`` (n, 4) the slot
    (0-3, reading order) of each item named, -1 after the last, the teacher-forced decoder input ``w`` (5, n) =
    ``<start>``, words, ``<end>``... and the target ``y`` (5, n) = words, ``<end>``, ``<end>``...

    Each canvas holds 2, 3 or 4 items in as many of the four slots, each slot's image drawn at random;
    everything is drawn from ``numpy.random.default_rng(seed)``.
    """
    rng = np.random.default_rng(seed)
    count = rng.integers(min(ITEMS), max(ITEMS) + 1, size=n)
    rank = np.argsort(np.argsort(rng.random((n, SLOTS)), axis=1), axis=1)
    filled = rank < count[:, None]                                  # which slots hold an item
    pick = rng.integers(0, len(images), size=(n, SLOTS))
    img = np.zeros((n,) + CANVAS, dtype=np.float32)
    for s in range(SLOTS):
        r, c, rows = s // 2, s % 2, np.flatnonzero(filled[:, s])
        img[rows, :, r * SIDE:(r + 1) * SIDE, c * SIDE:(c + 1) * SIDE] = images[pick[rows, s]]
    word_of = np.array([VOCAB.ids[w] for w in WORDS])[labels[pick]]   # (n, 4): the word of each slot's image
    y, slots = np.full((STEPS, n), END), np.full((n, SLOTS), -1)
    for i in range(n):
        where = np.flatnonzero(filled[i])
        y[:len(where), i], slots[i, :len(where)] = word_of[i, where], where
    w = np.concatenate([np.full((1, n), START), y[:-1]])
    return {"img": img, "w": w, "y": y, "slots": slots}


def datasets(train: int, val: int, test: int, seed: int = 0) -> dict:
    """Training / validation canvases from the training images (the first 55,000 / the last 5,000) and test
    canvases from the official test images only."""
    x, y = fashion_mnist.load("train")
    xt, yt = fashion_mnist.load("test")
    return {"train": canvases(x[:55000], y[:55000], train, seed),
            "val": canvases(x[55000:], y[55000:], val, seed + 1),
            "test": canvases(xt, yt, test, seed + 2)}


def caption_text(ids) -> str:
    """The words of a caption up to (not including) ``<end>``."""
    ids = [int(i) for i in ids]
    return VOCAB.decode(ids[:ids.index(END)] if END in ids else ids)


# ----------------------------------------------------------------------------- models


def encoder(net, img, channels=(8, 16, 32)):
    """3 x 3 conv + ReLU layers, each followed by max pooling, down to the 4 x 4 grid: (1, 56, 56) ->
    (channels[-1], 4, 4). Three layers pool by 2, 2 and 4 (padding 1: 14 -> 4); one layer (the quick mode, small
    and quick to compile) pools 14 x 14 windows. Each slot is 2 x 2 cells of the grid."""
    pools = {1: [(14, 14, 0)], 3: [(2, 2, 0), (2, 2, 0), (4, 4, 1)]}             # (kernel, stride, padding)
    if len(channels) not in pools:
        raise ValueError(f"the encoder has 1 or 3 conv layers, got channels={channels}")
    x = nn.Normalizer(255.0)(net, img)
    for c, (k, stride, pad) in zip(channels, pools[len(channels)]):
        x = nn.Conv2d(c, 3, padding=1, activation="relu")(net, x)
        x = nn.MaxPool2d(k, stride, padding=pad)(net, x)
    return x


def build(kind: str = "attention", hidden: int = 64, embed: int = 16, att: int = 32,
          channels=(8, 16, 32)) -> rc.Model:
    """The captioning model: inputs ``img`` (per sample), ``w`` (previous word) and ``y`` (next word) on ``t``;
    outputs ``logits`` and, for ``kind="attention"``, ``alpha`` (the P attention weights of each step).
    ``SIZES`` are the full run's sizes, ``QUICK_SIZES`` the quick mode's (small, so they compile and train fast).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    m = rc.Model(f"caption_{kind}")
    net = nn.Network(m)
    img = m.input("img", CANVAS, axes=())
    w, y = m.input("w", (), dtype="int"), m.input("y", (), dtype="int")
    feat = encoder(net, img, tuple(channels))                        # (C, 4, 4)
    C, P = feat.shape[0], feat.shape[1] * feat.shape[2]
    E = m.param("E", (len(VOCAB), embed))
    word = rc.embedding(E, w[t])                                     # row w[t] of the word table
    h, c = m.signal("h", hidden), m.signal("c", hidden)
    cell = nn.LSTMCell(hidden)
    if kind == "attention":
        Ft = rc.reshape(feat, (C, P))                                # channels x positions
        F = transpose(Ft)                                            # positions x channels
        Wf, Wh, v = m.param("Wf", (C, att)), m.param("Wh", (att, hidden)), m.param("v", att)
        e = rc.tanh(F @ Wf + Wh @ h[t - 1]) @ v                      # (P,): W_h h broadcast over positions
        alpha = rc.softmax(e)                                        # over the positions
        z = rc.fsum(Ft * alpha, axis=-1)                             # (C,): sum_p alpha[p] F[p]
        p = cell.declare(net, "dec", embed + C)
        h[t], c[t] = cell.step(p, rc.concat([word, z]), (h[t - 1], c[t - 1]))
        m.output("alpha", alpha)
        out = rc.concat([h[t], z])
    else:
        Wi, bi = m.param("Wi", (hidden, C * P)), m.param("bi", hidden)
        m.initial(h, rc.tanh(Wi @ rc.reshape(feat, (C * P,)) + bi))  # the image vector starts the decoder
        p = cell.declare(net, "dec", embed)
        h[t], c[t] = cell.step(p, word, (h[t - 1], c[t - 1]))
        out = h[t]
    Vo, co = m.param("Vo", (len(VOCAB), out.shape[0])), m.param("co", len(VOCAB))
    logits = Vo @ out + co
    m.output("logits", logits)
    m.loss(rc.softmax_cross_entropy(logits, y[t]))
    return m


_COMPILED: dict = {}


def compiled(kind: str = "attention", **sizes):
    """``(model, f)``: ``f = rc.compile(model, feedback={"w": "logits"})`` trains, steps and generates. Built once
    per process for each kind and sizes, so training, the pictures and ``caption`` share the compiled kernels."""
    key = (kind, tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in sizes.items())))
    if key not in _COMPILED:
        model = build(kind, **sizes)
        _COMPILED[key] = (model, rc.compile(model, feedback={"w": "logits"}))
    return _COMPILED[key]


# ----------------------------------------------------------------------------- decoding


def greedy(f, params: dict, img: np.ndarray) -> np.ndarray:
    """Greedy captions (5, n) through ``f.generate`` (temperature 0), primed with ``<start>``; after a caption's
    first ``<end>`` only ``<end>`` (as beam search ends a beam)."""
    prime = np.full((1, len(img)), START)
    out = f.generate(params, prime, STEPS, temperature=0, inputs={"img": img})[1:]
    out[np.maximum.accumulate(out == END, axis=0)] = END
    return out


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def beam_search(f, params: dict, img: np.ndarray, k: int = 3) -> np.ndarray:
    """Beam search of width ``k`` (5, n): ``n * k`` rows stepped together by ``f.step``; after each step the k best
    of the k x V extensions of each canvas survive, and the state rows are gathered after their beams. A beam
    that has said ``<end>`` only extends by ``<end>`` at no cost. ``k = 1`` is greedy decoding."""
    n, V = len(img), len(VOCAB)
    rep = np.repeat(img, k, axis=0)
    state = f.initial_state(n * k, params, {"img": rep})
    scores = np.full((n, k), -np.inf)
    scores[:, 0] = 0.0                                     # one live beam at the start
    words = np.zeros((n, k, 0), dtype=np.int64)
    prev = np.full(n * k, START)
    for _ in range(STEPS):
        out, state = f.step({"w": prev, "img": rep}, state, params)
        logp = _log_softmax(out["logits"].astype(np.float64)).reshape(n, k, V)
        if words.shape[2]:
            done = words[:, :, -1] == END
            logp[done] = -np.inf
            logp[done, END] = 0.0
        cand = (scores[:, :, None] + logp).reshape(n, k * V)
        best = np.argsort(-cand, axis=1, kind="stable")[:, :k]
        beam, word = best // V, best % V
        scores = np.take_along_axis(cand, best, axis=1)
        rows = (np.arange(n)[:, None] * k + beam).ravel()
        state = {name: s[:, rows] for name, s in state.items()}
        words = np.concatenate([np.take_along_axis(words, beam[:, :, None], axis=1), word[:, :, None]], axis=2)
        prev = word.ravel()
    return words[:, 0].T


def attention_maps(f, params: dict, img: np.ndarray, caption: np.ndarray) -> np.ndarray:
    """``alpha`` (5, n, 4, 4): where the attention model looks while saying each word of ``caption`` (5, n),
    teacher-forced (it reads ``<start>``, then the caption's words) through ``f.step``, the decoding kernel."""
    state = f.initial_state(len(img), params, {"img": img})
    prev, maps = np.full(len(img), START), []
    for word in caption:
        out, state = f.step({"w": prev, "img": img}, state, params)
        maps.append(out["alpha"])
        prev = word
    return np.stack(maps).reshape(caption.shape + GRID)


def attention_on_item(alpha: np.ndarray, slots: np.ndarray) -> float:
    """The mean share of attention mass on the slot of the item being named, over every word of every caption
    (not ``<end>``): ``alpha`` (5, n, 4, 4), ``slots`` (n, 4) as :func:`canvases` gives. Each slot is a 2 x 2
    block of grid cells, a quarter of the canvas."""
    steps, n = alpha.shape[:2]
    mass = alpha.reshape(steps, n, 2, 2, 2, 2).sum(axis=(3, 5)).reshape(steps, n, SLOTS)   # per slot
    k, i = np.nonzero(slots.T >= 0)                                   # word k of canvas i
    return float(mass[k, i, slots[i, k]].mean())


def scores(pred: np.ndarray, y: np.ndarray) -> dict:
    """Whole-caption accuracy (every token up to the true ``<end>`` right, and ``<end>`` there) and per-word
    accuracy (over the tokens up to and including the true ``<end>``)."""
    upto = np.arange(len(y))[:, None] <= (y == END).argmax(axis=0)[None, :]
    right = (pred == y) | ~upto
    return {"caption": float(right.all(axis=0).mean()), "word": float((pred == y)[upto].mean())}


def evaluate(f, params, data: dict, beam: int = 3, batch: int = 500) -> dict:
    """Greedy and beam-search scores on ``data``."""
    parts = [slice(a, a + batch) for a in range(0, len(data["img"]), batch)]
    g = np.concatenate([greedy(f, params, data["img"][s]) for s in parts], axis=1)
    b = np.concatenate([beam_search(f, params, data["img"][s], beam) for s in parts], axis=1)
    return {"greedy": scores(g, data["y"]), f"beam{beam}": scores(b, data["y"])}


# ----------------------------------------------------------------------------- training


def train(quick: bool = False, epochs: int = 6, n_train: int = 8000, n_test: int = 2000, batch: int = 32,
          lr: float = 2e-3, seed: int = 0, beam: int = 3, out: str | Path = "out/captioning", log=print) -> dict:
    """Train both models on the same batches, compiled; score them on the test canvases; write pictures,
    ``results.json`` and the params under ``out``."""
    sizes = QUICK_SIZES if quick else SIZES
    if quick:
        epochs, n_train, n_test = 2, 384, 200
    data = datasets(n_train, max(n_test // 4, 100), n_test, seed)
    res: dict = {"sizes": {"train": n_train, "test": n_test, "epochs": epochs, "batch": batch, "model": sizes}}
    rng = np.random.default_rng(seed)
    order = [rng.permutation(n_train) for _ in range(epochs)]
    for kind in KINDS:
        model, f = compiled(kind, **sizes)
        params = model.init_params(seed=seed)
        opt, losses, val, t0 = Adam(lr=lr), [], [], time.time()
        for ep in range(epochs):
            for a in range(0, n_train - batch + 1, batch):
                rows = order[ep][a:a + batch]
                feed = {"img": data["train"]["img"][rows], "w": data["train"]["w"][:, rows],
                        "y": data["train"]["y"][:, rows]}
                loss, grads = f.loss_and_grad(feed, params)
                opt.step(params, clip_global_norm(grads, 5.0)[0])
                losses.append(float(loss) / STEPS)
            val.append(scores(greedy(f, params, data["val"]["img"]), data["val"]["y"])["caption"])
            log(f"{kind:9s} epoch {ep + 1}/{epochs}  loss/word {np.mean(losses[-50:]):.3f}  "
                f"val caption accuracy {val[-1]:.3f}  ({time.time() - t0:.0f} s)")
        train_s = time.time() - t0
        r = {"losses": losses, "val": val, "train_s": train_s, "test": evaluate(f, params, data["test"], beam)}
        if kind == "attention":
            tf = attention_maps(f, params, data["test"]["img"], data["test"]["y"])
            r["attention_on_item"] = attention_on_item(tf, data["test"]["slots"])
            r["item_share"] = 1.0 / SLOTS
        res[kind] = r
        res[kind + "_params"] = params
        log(f"{kind:9s} test {json.dumps(r['test'])}")
    write_results(res, data["test"], Path(out))
    return res


def write_results(res: dict, test: dict, folder: Path) -> None:
    """``results.json``, ``attention.npz`` / ``baseline.npz`` and the pictures under ``folder``."""
    import captioning_plots

    folder.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        np.savez(folder / f"{kind}.npz", **res[kind + "_params"])
    summary = {k: ({kk: vv for kk, vv in v.items() if kk != "losses"} if k in KINDS else v)
               for k, v in res.items() if not k.endswith("_params")}
    (folder / "results.json").write_text(json.dumps(summary, indent=1) + "\n")
    captioning_plots.curves(res, folder / "captioning_curves.png")
    model, f = compiled("attention", **res["sizes"]["model"])
    params = res["attention_params"]
    rows = np.arange(5)
    cap = greedy(f, params, test["img"][rows])
    alpha = attention_maps(f, params, test["img"][rows], cap)
    captioning_plots.attention(test["img"][rows], cap, alpha, folder / "captioning_attention.png")


# ----------------------------------------------------------------------------- command line


def read_canvas(path: str) -> np.ndarray:
    """A canvas (1, 1, 56, 56) float32 in 0..255 from a .npy or a grey / RGB .png."""
    if path.endswith(".npy"):
        a = np.load(path).astype(np.float32)
    else:
        import matplotlib.image as mpimg

        a = np.asarray(mpimg.imread(path), dtype=np.float32)
        a = a[..., :3].mean(-1) if a.ndim == 3 else a
        a = a * 255.0 if a.max() <= 1.0 else a
    if a.shape != CANVAS[1:]:
        raise ValueError(f"{path}: expected a {CANVAS[1]} x {CANVAS[2]} grey image, got shape {a.shape}")
    return a[None, None]


def caption_file(path: str, model_dir: str, beam: int = 3, picture: str | None = None) -> dict:
    """Greedy and beam captions of the canvas in ``path`` by the trained attention model in ``model_dir`` (its
    sizes read from ``results.json`` there)."""
    sizes = json.loads((Path(model_dir) / "results.json").read_text())["sizes"]["model"]
    model, f = compiled("attention", **sizes)
    params = dict(np.load(Path(model_dir) / "attention.npz"))
    img = read_canvas(path)
    g, b = greedy(f, params, img), beam_search(f, params, img, beam)
    if picture:
        import captioning_plots

        captioning_plots.attention(img, g, attention_maps(f, params, img, g), Path(picture))
    return {"greedy": caption_text(g[:, 0]), f"beam{beam}": caption_text(b[:, 0])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train both models, score them, write pictures")
    tr.add_argument("--quick", action="store_true")
    tr.add_argument("--epochs", type=int, default=6)
    tr.add_argument("--train", type=int, default=8000, help="training canvases")
    tr.add_argument("--test", type=int, default=2000, help="test canvases")
    tr.add_argument("--beam", type=int, default=3)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="out/captioning")
    cp = sub.add_parser("caption", help="caption a 56 x 56 canvas (.png or .npy)")
    cp.add_argument("image")
    cp.add_argument("--model", default="out/captioning", help="folder of attention.npz")
    cp.add_argument("--beam", type=int, default=3)
    cp.add_argument("--picture", help="write the attention maps to this .png")
    sm = sub.add_parser("sample", help="write a canvas of test images to a .png / .npy file")
    sm.add_argument("path")
    sm.add_argument("--index", type=int, default=0)
    a = ap.parse_args(argv)
    if a.cmd == "train":
        train(a.quick, a.epochs, a.train, a.test, seed=a.seed, beam=a.beam, out=a.out)
    elif a.cmd == "caption":
        print(json.dumps(caption_file(a.image, a.model, a.beam, a.picture)))
    else:
        xt, yt = fashion_mnist.load("test")
        d = canvases(xt, yt, a.index + 1, 2)
        img = d["img"][a.index, 0]
        if a.path.endswith(".npy"):
            np.save(a.path, img)
        else:
            import matplotlib.image as mpimg

            mpimg.imsave(a.path, img.astype(np.uint8), cmap="gray", vmin=0, vmax=255)
        print(caption_text(d["y"][:, a.index]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
