"""The ReSeg classifier of the RNN lecture (``generate_rnn1_cls_model``), built with ``rnnc.nn`` and trained for
real on Fashion-MNIST; the CNN lecture's CNN-1 baseline alongside.

The seed network (input 3 x 128 x 128, two classes)::

    Normalizer(128) -> BN -> Conv 32 (3x3, pad 2, dilation 2) ReLU -> BN -> MaxPool 3x3/2 pad 1
    -> Conv 64 ... -> BN -> MaxPool -> Conv 128 ... -> BN -> MaxPool -> Conv 256 ... -> BN
    -> SpatialRNN(2x2 blocks, 256 tanh units, bidirectional rows then columns)  # (512, H/16, W/16)
    -> BN -> SpatialRNN(2x2, 512)                                               # (1024, H/32, W/32)
    -> BN -> Conv 1x1 to classes (pad 1, as in the seed) ReLU -> global average pool -> softmax

cost: multi-class cross-entropy; optimizer: momentum SGD (0.01, 0.9, weight decay 0.0005).

Fashion-MNIST version: the same layers on 1 x 28 x 28 images (no padding to 32 is needed: the three 3x3/2 pad-1
pools give 28 -> 14 -> 7 -> 4, so the recurrent blocks run on a 2 x 2 grid of 2 x 2 patches and then on one
patch), every width divided by 4 (convs 8, 16, 32, 64; recurrent units 64, 128) and Normalizer(255).

Usage::

    python examples/reseg_classifier.py summary                       # the seed's 128x128 model, layer table
    python examples/reseg_classifier.py train --epochs 2 --out out/flagship   # the full run (docs/flagship.md)
    python examples/reseg_classifier.py train --quick                  # CI: fixed small subset, a minute or less
    python examples/reseg_classifier.py predict out/flagship/reseg image.png   # class and probability
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
from rnnc.train import CosineLR, FlipShift, GradientDescentMomentum, Trainer, load_model, save_model  # noqa: E402
from rnnc.train.engine import CompiledEngine, InterpretEngine  # noqa: E402

SEED_WIDTHS, SEED_HIDDEN = (32, 64, 128, 256), (256, 512)
FASHION_WIDTHS, FASHION_HIDDEN = (8, 16, 32, 64), (64, 128)   # the seed's widths / 4


def _conv(filters: int) -> nn.Conv2d:
    """The seed's 3x3 convolution: padding 2, dilation 2 (same size out), Kaiming init, zero bias, ReLU."""
    return nn.Conv2d(filters, kernel=3, stride=1, padding=2, dilation=2, activation="relu")


def build_model(input_shape=(3, 128, 128), classes: int = 2, widths=SEED_WIDTHS, hidden=SEED_HIDDEN,
                divisor: float = 128.0, name: str = "reseg") -> nn.Classifier:
    """``generate_rnn1_cls_model(input_shape)`` layer for layer (see the module docstring).

    ``widths`` are the four conv widths, ``hidden`` the units per direction of the two SpatialRNN blocks (each
    block outputs ``2 * hidden`` channels at half the resolution). The final 1x1 conv keeps the seed's
    ``padding=1``: its border outputs are ``relu(bias)``, averaged in by the global pool.
    """
    layers = [nn.Normalizer(divisor), nn.BatchNorm()]
    for k, w in enumerate(widths):
        layers += [_conv(w), nn.BatchNorm()]
        if k < len(widths) - 1:
            layers.append(nn.MaxPool2d(kernel=3, stride=2, padding=1))
    layers += [nn.SpatialRNN(block=(2, 2), hidden=hidden[0], activation="tanh"), nn.BatchNorm(),
               nn.SpatialRNN(block=(2, 2), hidden=hidden[1], activation="tanh"), nn.BatchNorm(),
               nn.Conv2d(classes, kernel=1, stride=1, padding=1, activation="relu"),
               nn.AvgPool2d("all"), nn.Softmax()]
    return nn.Classifier(tuple(layers), tuple(input_shape), name)


def build_cnn1(input_shape=(3, 128, 128), classes: int = 2, widths=(32, 64), divisor: float = 128.0,
               name: str = "cnn1") -> nn.Classifier:
    """The CNN lecture's CNN-1: Normalizer -> Conv 32 ReLU -> MaxPool -> Conv 64 ReLU -> MaxPool -> Dense(classes)
    -> softmax (the seed's logistic output becomes a softmax for more than two classes)."""
    pool = nn.MaxPool2d(kernel=3, stride=2, padding=1)
    layers = (nn.Normalizer(divisor), _conv(widths[0]), pool, _conv(widths[1]), pool, nn.Flatten(),
              nn.Dense(classes), nn.Softmax())
    return nn.Classifier(layers, tuple(input_shape), name)


def fashion_reseg(widths=FASHION_WIDTHS, hidden=FASHION_HIDDEN) -> nn.Classifier:
    """The ReSeg classifier scaled for Fashion-MNIST (1 x 28 x 28, 10 classes, default widths / 4)."""
    return build_model((1, 28, 28), 10, tuple(widths), tuple(hidden), divisor=255.0, name="reseg_fashion")


def fashion_cnn1(widths=FASHION_WIDTHS) -> nn.Classifier:
    """CNN-1 with the same width scaling (its convs as the ReSeg model's first two: 8 and 16 by default)."""
    return build_cnn1((1, 28, 28), 10, (widths[0], widths[1]), divisor=255.0, name="cnn1_fashion")


# ----------------------------------------------------------------------------- engine


class LoggedEngine:
    """A training engine (:mod:`rnnc.train.engine`) that also logs each step's loss and batch accuracy, for the
    training curves."""

    def __init__(self, engine):
        self.engine, self.name = engine, engine.name
        self.log: list[tuple[float, float]] = []

    def loss_and_grad(self, batch: dict, params: dict):
        step = self.engine.loss_and_grad(batch, params)
        if "probs" in step.outputs and "y" in batch:
            self.log.append((float(step.loss), float((step.outputs["probs"].argmax(-1) == batch["y"]).mean())))
        return step

    def forward(self, batch: dict, params: dict) -> dict:
        return self.engine.forward(batch, params)


def make_trainer(clf, epochs: int, lr: float, batch: int, seed: int, progress: bool = True,
                 engine: str = "compiled", threads: int | None = None, augment: bool = False) -> Trainer:
    """Momentum SGD as the seed (momentum 0.9, weight decay 5e-4) with a cosine schedule from ``lr``.
    ``engine``: "compiled" (Numba CPU kernels: one kernel gives loss, gradients and the batch statistics; its
    parallel image kernels run on ``threads`` threads, default every thread Numba uses, with one BLAS thread
    each: this network's products are too small for a second BLAS thread to pay, and on a shared machine a
    spinning second thread costs several times the step) or "interpret" (the numpy reference). ``augment``:
    random horizontal flips and shifts of up to 2 pixels (:class:`FlipShift`)."""
    opt = GradientDescentMomentum(lr, momentum=0.9, weight_decay=0.0005)
    tr = Trainer(clf, opt, batch_size=batch, seed=seed, schedule=CosineLR(epochs), engine=engine,
                 progress=progress, augment=FlipShift(flip=0.5, shift=2) if augment else None)
    if engine == "compiled":      # threads: see docs/flagship.md, "Threads"
        # the trainer's graphs: the model's plus the predictions its accuracy reads (rnnc.train.metrics)
        finite = tr.engine.check_finite
        tr.engine = CompiledEngine(tr.metrics.graph, tr.dtype, threads=threads, check_finite=finite)
        tr.eval_engine = CompiledEngine(tr.eval_metrics.graph, tr.dtype, threads=threads, check_finite=finite)
    tr.engine = LoggedEngine(tr.engine)
    return tr


# ----------------------------------------------------------------------------- training run


def _as_data(x, y) -> dict:
    return {"x": np.ascontiguousarray(x, dtype=np.float32), "y": np.asarray(y, dtype=np.int64)}


def load_splits(quick: bool, seed: int) -> tuple[dict, dict, dict]:
    """(train, validation, test). Full: 55,000 / 5,000 held out of the training set / the official 10,000.
    Quick: fixed balanced subsets (1,280 train, 500 validation from the training set, 500 test)."""
    x, y = fashion_mnist.load("train")
    xt, yt = fashion_mnist.load("test")
    perm = np.random.default_rng(seed).permutation(len(y))
    if quick:
        tr = fashion_mnist.balanced_subset(y, 128, seed)
        rest = np.setdiff1d(np.arange(len(y)), tr)
        va = rest[fashion_mnist.balanced_subset(y[rest], 50, seed + 1)]
        te = fashion_mnist.balanced_subset(yt, 50, seed + 2)
        return _as_data(x[tr], y[tr]), _as_data(x[va], y[va]), _as_data(xt[te], yt[te])
    va, tr = perm[:5000], perm[5000:]
    return _as_data(x[tr], y[tr]), _as_data(x[va], y[va]), _as_data(xt, yt)


def confusion(y_true, y_pred, classes: int = 10) -> np.ndarray:
    """``C[i, j]`` = number of samples of class i predicted as j."""
    c = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(c, (y_true, y_pred), 1)
    return c


def fit_one(clf, train, val, test, epochs, lr, batch, seed, progress, engine="compiled",
            threads=None, augment=False) -> tuple[dict, Trainer]:
    """Train ``clf``; evaluate on ``val`` every epoch and on ``test`` once at the end (no model selection)."""
    tr = make_trainer(clf, epochs, lr, batch, seed, progress, engine, threads, augment)
    t0 = time.perf_counter()
    tr.fit(train, epochs, val=val)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    probs = tr.predict(test)
    eval_s = time.perf_counter() - t1
    pred = probs.argmax(-1)
    res = {"model": clf.name, "params": int(sum(v.size for k, v in tr.params.items())),
           "test_accuracy": float((pred == test["y"]).mean()), "test_count": int(len(pred)),
           "history": tr.history, "steps": tr.engine.log, "train_seconds": train_s,
           "seconds_per_epoch": [h["seconds"] for h in tr.history],
           "train_images_per_s": len(train["y"]) * epochs / sum(h["seconds"] for h in tr.history),
           "test_eval_seconds": eval_s, "confusion": confusion(test["y"], pred).tolist()}
    return res, tr


def run_training(args) -> dict:
    """The ``train`` command: ReSeg (and CNN-1 unless ``--no-baseline``) on the same data, results as JSON."""
    _blas_threads(args.threads)
    if args.quick:
        args.epochs = args.epochs or 3
    epochs = args.epochs or 6
    train, val, test = load_splits(args.quick, args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"command": " ".join(["python", "examples/reseg_classifier.py"] + sys.argv[1:]), "seed": args.seed,
               "epochs": epochs, "lr": args.lr, "batch": args.batch, "quick": bool(args.quick),
               "train_count": int(len(train["y"])), "val_count": int(len(val["y"])),
               "augment": bool(getattr(args, "augment", False))}
    engine = getattr(args, "engine", None) or ("interpret" if args.quick else "compiled")
    results["engine"] = engine
    widths, hidden = getattr(args, "widths", None) or FASHION_WIDTHS, getattr(args, "hidden", None) or FASHION_HIDDEN
    results.update(widths=list(widths), hidden=list(hidden))
    models = [("reseg", fashion_reseg(widths, hidden))] + ([] if args.no_baseline else [("cnn1", fashion_cnn1(widths))])
    for key, clf in models:
        print(f"== {clf.name}: {epochs} epochs on {len(train['y'])} images, batch {args.batch}, lr {args.lr}, "
              f"{engine} engine")
        res, tr = fit_one(clf, train, val, test, epochs, args.lr, args.batch, args.seed, not args.quiet, engine,
                          args.threads, results["augment"])
        save_model(str(out / key), clf, tr.params, tr.buffers)
        results[key] = res
        print(f"   {clf.name}: test accuracy {res['test_accuracy']:.4f} on {res['test_count']} images, "
              f"{np.mean(res['seconds_per_epoch']):.1f} s/epoch, {res['train_images_per_s']:.0f} images/s")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    if args.img:
        plot_all(results, Path(args.img))
    return results


def int_tuple(count: int):
    def parse(text: str) -> tuple[int, ...]:
        try:
            out = tuple(int(v) for v in text.split(","))
        except ValueError:
            out = ()
        if len(out) != count or min(out) < 1:
            raise argparse.ArgumentTypeError(f"expected {count} positive integers separated by commas, got {text!r}")
        return out
    return parse


def _blas_threads(n: int | None) -> None:
    if n:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            print("--threads needs threadpoolctl (pip install threadpoolctl); using the BLAS default")
            return
        threadpool_limits(n)


# ----------------------------------------------------------------------------- plots


def _smooth(v, k: int = 20) -> np.ndarray:
    v = np.asarray(v, dtype=float)
    k = max(1, min(k, len(v)))
    return np.convolve(v, np.ones(k) / k, mode="valid")


def plot_all(results: dict, folder: Path) -> None:
    """``flagship_curves.png`` (training loss and accuracy per step, validation accuracy per epoch, both models)
    and ``flagship_confusion.png`` (the ReSeg model on the test set)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key, color in (("reseg", "tab:blue"), ("cnn1", "tab:orange")):
        if key not in results:
            continue
        r = results[key]
        steps = np.asarray(r["steps"])
        per_epoch = len(steps) / max(len(r["history"]), 1)
        k = max(1, min(20, len(steps)))
        x = (np.arange(len(steps) - k + 1) + k) / per_epoch
        ax1.plot(x, _smooth(steps[:, 0]), color=color, label=f"{r['model']} train loss")
        ax2.plot(x, _smooth(steps[:, 1]), color=color, alpha=0.6, label=f"{r['model']} train (batch)")
        ep = [h["epoch"] for h in r["history"]]
        ax2.plot(ep, [h["val_accuracy"] for h in r["history"]], "o-", color=color, label=f"{r['model']} validation")
    ax1.set(xlabel="epoch", ylabel="cross-entropy", title="training loss (moving mean of 20 steps)")
    ax2.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0.5, 1.0))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "flagship_curves.png", dpi=110)
    plt.close(fig)
    _plot_confusion(plt, np.asarray(results["reseg"]["confusion"]), results["reseg"], folder)


def _plot_confusion(plt, c: np.ndarray, r: dict, folder: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(c, cmap="Blues")
    names = fashion_mnist.CLASSES
    ax.set_xticks(range(10), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(10), names, fontsize=8)
    for i in range(10):
        for j in range(10):
            ax.text(j, i, str(c[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if c[i, j] > c.max() / 2 else "black")
    ax.set(xlabel="predicted", ylabel="true",
           title=f"{r['model']}: test accuracy {r['test_accuracy']:.2%} ({r['test_count']} images)")
    fig.tight_layout()
    fig.savefig(folder / "flagship_confusion.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- inference


def read_image(path: str) -> np.ndarray:
    """A 28 x 28 grey image as ``(1, 28, 28)`` float32 in 0..255: a PNG (matplotlib.image; RGB(A) averaged to
    grey, 0..1 floats scaled to 0..255) or a ``.npy`` array of shape (28, 28) or (1, 28, 28) in 0..255."""
    if path.endswith(".npy"):
        a = np.load(path, allow_pickle=False).astype(np.float32)
    else:
        import matplotlib.image as mpimg

        a = np.asarray(mpimg.imread(path), dtype=np.float32)
        if a.ndim == 3:
            a = a[..., :3].mean(-1)
        if a.max() <= 1.0:
            a = a * 255.0
    a = a.reshape(a.shape[-2:]) if a.ndim == 3 and a.shape[0] == 1 else a
    if a.shape != (28, 28):
        raise ValueError(f"{path}: expected a 28 x 28 grey image (Fashion-MNIST), got an array of shape {a.shape}")
    return a[None]


def predict(model_path: str, image_path: str) -> tuple[str, float, np.ndarray]:
    """Classify one image with a saved model: (class name, its probability, all probabilities)."""
    clf, params, buffers = load_model(model_path)
    net = clf.build(train=False)
    engine = InterpretEngine(net.model)       # one image: the interpreter (no kernel to compile)
    x = read_image(image_path)[None]
    probs = engine.forward({"x": x, "y": np.zeros(1, dtype=np.int64)}, {**params, **buffers})["probs"][0]
    k = int(np.argmax(probs))
    return fashion_mnist.CLASSES[k], float(probs[k]), probs


def save_sample(index: int, path: str) -> int:
    """Write test image ``index`` as a PNG (or .npy); returns its label."""
    x, y = fashion_mnist.load("test")
    if path.endswith(".npy"):
        np.save(path, x[index, 0])
    else:
        import matplotlib.image as mpimg

        grey = np.clip(np.rint(x[index, 0]), 0, 255).astype(np.uint8)
        mpimg.imsave(path, np.repeat(grey[..., None], 3, -1))     # 8-bit RGB: exact (a colormap is not)
    return int(y[index])


def render_block(folder: Path, fmt: str = "svg") -> list[Path]:
    """Draw one SpatialRNN block (2x2 patches of a 4-channel 4x4 map, 3 units: a 2x2 grid) folded and unrolled."""
    m = rc.Model("spatial_rnn_block")
    net = nn.Network(m, train=False)
    x = m.input("x", (4, 4, 4), axes=())
    m.output("y", nn.SpatialRNN(block=(2, 2), hidden=3)(net, x))
    folder.mkdir(parents=True, exist_ok=True)
    return [rc.render(m, folder / f"flagship_srnn_folded.{fmt}"),
            rc.render(m.unroll(), folder / f"flagship_srnn_unrolled.{fmt}")]


# ----------------------------------------------------------------------------- command line


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="The lecture's ReSeg classifier in rnnc, on Fashion-MNIST")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("summary", help="layer table of the seed's model (input 3x128x128, 2 classes)")
    s.add_argument("--fashion", action="store_true", help="the Fashion-MNIST version instead")
    t = sub.add_parser("train", help="train ReSeg and the CNN-1 baseline on Fashion-MNIST")
    t.add_argument("--epochs", type=int, default=None, help="default 6 (quick: 3)")
    t.add_argument("--lr", type=float, default=0.05)
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--quick", action="store_true", help="fixed small subset (CI)")
    t.add_argument("--augment", action="store_true", help="random horizontal flips and shifts of up to 2 pixels")
    t.add_argument("--widths", type=int_tuple(4), default=None, help="the four conv widths, e.g. 16,32,64,128 "
                   "(default 8,16,32,64: the seed's / 4)")
    t.add_argument("--hidden", type=int_tuple(2), default=None, help="the two SpatialRNN widths (default 64,128)")
    t.add_argument("--no-baseline", action="store_true", help="skip CNN-1")
    t.add_argument("--threads", type=int, default=None,
                   help="threads (compiled kernels: their parallel kernels' threads, default every thread Numba "
                        "uses, one BLAS thread each; interpreter: BLAS threads, default the library's)")
    t.add_argument("--engine", choices=("compiled", "interpret"), default=None,
                   help="compiled Numba kernels (default) or the numpy interpreter (default with --quick: a "
                        "short run does not pay for the one-time Numba compile)")
    t.add_argument("--out", default="out/flagship", help="folder for results.json and the saved models")
    t.add_argument("--img", default=None, help="folder for the PNG plots (e.g. docs/img)")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    q = sub.add_parser("predict", help="classify one image (.png or .npy, 28x28 grey)")
    q.add_argument("model", help="saved model path without suffix, e.g. out/flagship/reseg")
    q.add_argument("image")
    e = sub.add_parser("sample", help="write a test image to a .png / .npy file")
    e.add_argument("index", type=int)
    e.add_argument("path")
    d = sub.add_parser("render", help="draw the SpatialRNN block folded and unrolled on a 2x2 grid")
    d.add_argument("folder", nargs="?", default="out/flagship",
                   help="where the drawings go (default out/flagship; docs/img regenerates the docs' drawings)")
    d.add_argument("--format", default="svg", choices=("svg", "png", "pdf", "dot"))
    args = p.parse_args(argv)
    if args.cmd == "summary":
        clf = fashion_reseg() if args.fashion else build_model((3, 128, 128), 2)
        print(rc.summary(clf, batch=128))
        model = clf.build(train=True).model
        forward, step = rc.flops(model, batch=128), rc.flops(rc.grad(model), batch=128)
        print(f"products (rc.flops, batch 128): forward {forward.total:,} FLOPs, training step {step.total:,} FLOPs")
    elif args.cmd == "train":
        run_training(args)
    elif args.cmd == "predict":
        name, prob, _ = predict(args.model, args.image)
        print(f"{name} ({prob:.1%})")
    elif args.cmd == "render":
        for path in render_block(Path(args.folder), args.format):
            print(f"wrote {path}")
    else:
        label = save_sample(args.index, args.path)
        print(f"wrote test image {args.index} ({fashion_mnist.CLASSES[label]}) to {args.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
