"""Image models and data the image tests share: every image op on one model (``ops_model``/``ops_data``), a
small conv + BN + pool + SpatialRNN classifier, the batch-norm loss model, a toy classifier and its data, and
convolution written as plain loops (the reference)."""
from __future__ import annotations

import functools

import numpy as np

import rnnc as rc
import rnnc.nn as nn
from rnnc import t
from rnnc.ops import OPS, as_node, batch_norm, bn_stats
from rnnc.ops import image as im
from rnnc.ops.registry import make

B = 2
IMAGE_OPS = ["conv2d", "conv2d_input_grad", "conv2d_weight_grad", "maxpool2d", "maxpool2d_grad",
             "maxpool2d_select", "avgpool2d", "avgpool2d_grad", "channel_mean", "channel_spread", "to_grid",
             "from_grid"]
def _adjoint(m, name, y, axes=()):
    """An input shaped like ``y`` (per sample) standing for its adjoint."""
    return as_node(m.input(name, y.shape, axes=axes))


def ops_model():
    """Every image op (forward and the gradient ops, applied directly) on one small model."""
    m = rc.Model("image_ops")
    x = m.input("x", (3, 7, 6), axes=())
    w = m.param("w", (4, 3, 3, 2))
    y = im.conv2d(x, w, stride=(2, 1), padding=(1, 2), dilation=(1, 2))
    dx, dw = OPS["conv2d"].vjp(y, _adjoint(m, "gy", y))
    mp = im.maxpool2d(x, 3, 2, 1)
    (mg,) = OPS["maxpool2d"].vjp(mp, _adjoint(m, "gmp", mp))
    sel = make("maxpool2d_select", [as_node(x), _adjoint(m, "gx", as_node(x))], kernel=(3, 3), stride=(2, 2),
               padding=(1, 1))
    ap = im.avgpool2d(x, (2, 3), (1, 2), (1, 1))
    (ag,) = OPS["avgpool2d"].vjp(ap, _adjoint(m, "gap", ap))
    cm = im.channel_mean(x)
    (cs,) = OPS["channel_mean"].vjp(cm, as_node(m.param("gc", (3,))))
    i, j = rc.axes("img_i", "img_j")
    cells = rc.tanh(im.to_grid(x, (2, 4), (i, j), pad=True))
    back = im.from_grid(cells, (2, 4), (i, j), crop=(7, 6))
    xs = m.input("xs", (2, 5, 5))                                   # a convolution inside a scan over t
    k1, k2 = m.param("k1", (2, 2, 3, 3)), m.param("k2", (2, 2, 3, 3))
    h = m.signal("h", (2, 5, 5))
    h[t] = rc.tanh(im.conv2d(xs[t], k1, padding=1) + im.conv2d(h[t - 1], k2, stride=1, padding=2, dilation=2))
    hg = OPS["conv2d"].vjp(as_node(im.conv2d(h[t], k2, padding=1)), _adjoint(m, "gh", as_node(h[t]), (t,)))
    gt = _adjoint(m, "gyt", y, (t,))                                 # adjoints over t, maps without t:
    bcast = {"bcast_weight_grad": OPS["conv2d"].vjp(y, gt)[1],      # broadcast reads (inline loop nests)
             "bcast_maxpool_grad": OPS["maxpool2d"].vjp(mp, _adjoint(m, "gmpt", mp, (t,)))[0]}
    outs = {**bcast, "conv2d": y, "conv2d_input_grad": dx,
             "conv2d_weight_grad": dw, "maxpool2d": mp, "maxpool2d_grad": mg,
            "maxpool2d_select": sel, "avgpool2d": ap, "avgpool2d_grad": ag, "channel_mean": cm,
            "channel_spread": cs, "to_grid": cells, "from_grid": back, "scan_conv": h[t], "scan_input_grad": hg[0],
            "scan_weight_grad": hg[1]}
    for name, node in outs.items():
        m.output(name, node)
    return m


def ops_data(m, seed=0):
    """Random inputs (batch ``B``, 4 steps on a loop axis) and params for :func:`ops_model`."""
    rng = np.random.default_rng(seed)
    g = m.graph
    ins = {}
    for name, node in g.inputs.items():
        lead = (4,) * len(node.axes) + (B,)
        ins[name] = rng.standard_normal(lead + node.shape)
    ps = {name: rng.standard_normal(node.shape) for name, node in g.params.items()}
    ins["x"][0, 1, 2, 3] = ins["x"][0, 1, 2, 4]       # a tie inside a pooling window: the first max wins
    return ins, ps


@functools.cache
def classifier():
    """A small conv + BN + pool + SpatialRNN + global-pool classifier's training model (2x8x8 inputs): one model
    object per process, shared by every test that compiles it."""
    layers = (nn.Normalizer(4.0), nn.BatchNorm(), nn.Conv2d(4, kernel=3, padding=2, dilation=2, activation="relu"),
              nn.BatchNorm(), nn.MaxPool2d(kernel=3, stride=2, padding=1),
              nn.Conv2d(6, kernel=3, stride=1, padding=1, activation="relu"),
              nn.SpatialRNN(block=(2, 2), hidden=3, activation="tanh"), nn.BatchNorm(),
              nn.Conv2d(3, kernel=1, padding=1, activation="relu"), nn.AvgPool2d("all"), nn.Softmax())
    return nn.Classifier(layers, (2, 8, 8), "small_reseg").build(train=True).model


SHAPE = (3, 4, 5)


def bn_model(loop_axis: bool, affine: bool) -> rc.Model:
    """``loss = mean(w * (batch_norm(x) + 1)^2)``; outputs the statistics, the normalised map and the
    stand-alone gradient of ``bn_stats`` (its own VJP, not the one batch_norm uses)."""
    m = rc.Model(f"bn_{int(loop_axis)}{int(affine)}")
    axes = (t,) if loop_axis else ()
    x, w = m.input("x", SHAPE, axes=axes), m.input("w", SHAPE, axes=axes)
    s = bn_stats(x)
    gb = (m.param("gamma", (SHAPE[0],)), m.param("beta", (SHAPE[0],))) if affine else ()
    y = batch_norm(x, s, *gb)
    m.output("stats", s)
    m.output("y", y)
    m.loss(rc.mean(w * (y + 1.0) * (y + 1.0)))
    return m


def bn_data(loop_axis: bool, seed: int = 0, batch: int = 3, steps: int = 4) -> tuple[dict, dict]:
    """Inputs x (mean far from zero), w and affine params for :func:`bn_model`."""
    rng = np.random.default_rng(seed)
    lead = ((steps,) if loop_axis else ()) + (batch,)
    ins = {"x": 2.0 + 1.5 * rng.standard_normal(lead + SHAPE), "w": rng.random(lead + SHAPE)}
    return ins, {"gamma": 1.0 + 0.3 * rng.standard_normal(SHAPE[0]), "beta": 0.2 * rng.standard_normal(SHAPE[0])}


def toy_data(n=96, seed=5):
    """``n`` 1x6x6 images, labelled by which half is brighter."""
    X = np.random.default_rng(seed).standard_normal((n, 1, 6, 6))
    y = (X[:, 0, :3].mean((1, 2)) > X[:, 0, 3:].mean((1, 2))).astype(int)
    return {"x": X, "y": y}


def toy_classifier():
    """A conv + BN + pool + dropout + dense classifier for :func:`toy_data`."""
    return nn.Classifier((nn.Conv2d(3, 3, padding=1, activation="relu"), nn.BatchNorm(), nn.MaxPool2d(2),
                          nn.Dropout(0.1), nn.Flatten(), nn.Dense(2), nn.Softmax()), (1, 6, 6))


def conv_loops(x, w, s, p, d):
    """conv2d (stride ``s``, padding ``p``, dilation ``d``) as loops over output pixels."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])))
    ho, wo = im.out_size(h, kh, s[0], p[0], d[0]), im.out_size(wd, kw, s[1], p[1], d[1])
    y = np.zeros((n, o, ho, wo))
    for u in range(ho):
        for v in range(wo):
            patch = xp[:, :, u * s[0]:u * s[0] + d[0] * (kh - 1) + 1:d[0], v * s[1]:v * s[1] + d[1] * (kw - 1) + 1:d[1]]
            y[:, :, u, v] = np.einsum("ncab,ocab->no", patch, w)
    return y


def igrad_regions(g, w, dx, ph, pw, dh, dw, budget):
    """The input gradient of a stride-1 convolution as generated code runs it where the forward convolution
    takes the regions: ``imk.flip`` the kernel, then ``imk.conv2d_fwd_regions`` of ``g`` at padding
    ``d (k - 1) - p`` (scratch columns at their largest)."""
    from rnnc.backends.cpu import kernels_image as imk
    o, c, kh, kw = w.shape
    n, _, h, wd = dx.shape
    wf = np.empty((c, o, kh, kw), w.dtype)
    imk.flip(w, wf)
    imk.conv2d_fwd_regions(g, wf, np.empty(n * o * kh * kw * h * wd, g.dtype), np.empty(n * c * h * wd, g.dtype), dx,
                           1, 1, dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw, budget)
