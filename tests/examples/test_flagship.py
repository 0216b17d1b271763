"""The flagship (examples/reseg_classifier.py): the seed's ReSeg classifier layer for layer, its parameter count
by hand, and a quick real training run on a fixed Fashion-MNIST subset that must learn."""
import sys

import numpy as np
import pytest
from paths import BENCHMARKS, EXAMPLES

sys.path.insert(0, str(EXAMPLES))

import fashion_mnist  # noqa: E402
import reseg_classifier as R  # noqa: E402

import rnnc as rc  # noqa: E402


def conv(o, c, k=3):
    return o * c * k * k + o                     # kernel + bias


def bn(c):
    return 2 * c                                 # gamma, beta (running statistics are not trained)


def birnn(d, u):
    return 2 * (u * d + u * u + u)               # two directions of W (u, d), U (u, u), b (u)


def srnn(c, u):
    return birnn(4 * c, u) + birnn(2 * u, u)     # rows over 2x2 patch vectors, then columns over the 2u concat


def test_seed_model_parameter_count_by_hand():
    s = rc.summary(R.build_model((3, 128, 128), 2))
    expected = [0, bn(3), conv(32, 3), bn(32), 0, conv(64, 32), bn(64), 0, conv(128, 64), bn(128), 0,
                conv(256, 128), bn(256), srnn(256, 256), bn(512), srnn(512, 512), bn(1024), conv(2, 1024, 1), 0, 0]
    assert [r.params for r in s.rows] == expected
    assert s.params == 5_640_456 == sum(expected)


def test_seed_model_shapes_layer_for_layer():
    rows = rc.summary(R.build_model((3, 128, 128), 2)).rows
    names = [r.name for r in rows]
    assert names == ["Normalizer", "BatchNorm"] + ["Conv2d", "BatchNorm", "MaxPool2d"] * 3 + [
        "Conv2d", "BatchNorm", "SpatialRNN", "BatchNorm", "SpatialRNN", "BatchNorm", "Conv2d", "AvgPool2d",
        "Softmax"]
    shapes = {k: r.shape for k, r in enumerate(rows)}
    assert shapes[2] == (32, 128, 128) and shapes[4] == (32, 64, 64)        # pad 2 + dilation 2 keep the size
    assert shapes[11] == (256, 16, 16)                                      # H / 8
    assert shapes[13] == (512, 8, 8) and shapes[15] == (1024, 4, 4)         # the seed's comments
    assert shapes[17] == (2, 6, 6) and shapes[19] == (2,)                   # 1x1 conv with the seed's padding 1


def test_fashion_model_shapes():
    rows = rc.summary(R.fashion_reseg()).rows
    assert rows[11].shape == (64, 4, 4)
    assert rows[13].shape == (128, 2, 2) and rows[15].shape == (256, 1, 1)
    assert rows[-1].shape == (10,)


def test_fashion_widths_option_parameter_count_by_hand():
    """``train --widths 16,32,64,128`` (the 92% run): the seed's layers at half its conv widths."""
    widths = R.int_tuple(4)("16,32,64,128")
    s = rc.summary(R.fashion_reseg(widths, R.FASHION_HIDDEN))
    expected = (bn(1) + conv(16, 1) + bn(16) + conv(32, 16) + bn(32) + conv(64, 32) + bn(64) + conv(128, 64)
                + bn(128) + srnn(128, 64) + bn(128) + srnn(128, 128) + bn(256) + conv(10, 256, 1))
    assert s.params == expected == 462_188
    for bad in ("16,32,64", "16,32,64,0", "a,b,c,d"):
        with pytest.raises(R.argparse.ArgumentTypeError, match="4 positive integers"):
            R.int_tuple(4)(bad)


def test_read_image_rejects_wrong_shape(tmp_path):
    p = tmp_path / "big.npy"
    np.save(p, np.zeros((32, 32)))
    with pytest.raises(ValueError, match="28 x 28"):
        R.read_image(str(p))


@pytest.mark.skipif(not fashion_mnist.available(), reason="Fashion-MNIST not installed "
                    "(sudo apt-get install -y dataset-fashion-mnist)")
def test_quick_training_learns_and_predicts(tmp_path, capsys):
    out = tmp_path / "run"
    res = R.run_training(R.main.__globals__["argparse"].Namespace(
        quick=True, epochs=2, lr=0.05, batch=128, seed=0, no_baseline=True, threads=None, out=str(out),
        img=None, quiet=True))
    r = res["reseg"]
    assert r["test_count"] == 500 and np.sum(r["confusion"]) == 500
    assert r["history"][-1]["loss"] < r["history"][0]["loss"]
    assert r["test_accuracy"] > 0.45, r["test_accuracy"]     # chance is 0.10 on the balanced held-out subset
    png, npy = str(tmp_path / "x.png"), str(tmp_path / "x.npy")
    label = R.save_sample(0, png)
    R.save_sample(0, npy)
    name, prob, probs = R.predict(str(out / "reseg"), png)
    assert name in fashion_mnist.CLASSES and 0.1 <= prob <= 1.0 and abs(probs.sum() - 1) < 1e-4
    _, _, probs_npy = R.predict(str(out / "reseg"), npy)
    np.testing.assert_allclose(probs, probs_npy, atol=1e-4)  # PNG round trip keeps the 8-bit pixels
    assert 0 <= label < 10


def test_pytorch_twin_computes_the_same_network():
    """The benchmark's PyTorch network is the same function as rnnc's (training-mode batch norm, same params)."""
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(BENCHMARKS))
    import flagship

    net = R.fashion_reseg().build(train=True)
    params = net.model.init_params(3, "float64")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(3, 1, 28, 28)).astype(np.float64)
    y = rng.integers(0, 10, size=3)
    ours = rc.interpret(net.model, {"x": x, "y": y}, params).outputs["logits"]
    model = flagship.torch_model().double().train()
    flagship.copy_rnnc_params(model, params)
    with torch.no_grad():
        theirs = model(torch.from_numpy(x / 255.0)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-8)


def test_compiled_trainer_reports_accuracy(tmp_path):
    """The example's compiled engines train on the trainer's graphs, so the accuracy's predictions come back
    from the compiled kernel (a regression: they were built on the bare model and the first step failed)."""
    clf = R.fashion_reseg(widths=(2, 2, 2, 2), hidden=(2, 2))
    tr = R.make_trainer(clf, epochs=1, lr=0.05, batch=8, seed=0, progress=False, engine="compiled", threads=1)
    rng = np.random.default_rng(0)
    data = {"x": rng.integers(0, 256, (16, 1, 28, 28)).astype(np.float32), "y": rng.integers(0, 10, 16)}
    tr.fit(data, 1, val=data)
    row = tr.history[-1]
    assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["loss"]), row
    assert len(tr.engine.log) >= 2 and tr.engine.name == "compiled"    # + the compile warm-up call
