"""Data augmentation (rnnc/train/augment.py): FlipShift equals a brute-force mirror and shift, keeps the
other inputs, refuses what is not an image batch; training with it is reproducible and resumes exactly."""
from __future__ import annotations

import numpy as np
import pytest
from image_cases import toy_classifier, toy_data

from rnnc.train import CosineLR, FlipShift, GradientDescentMomentum, Trainer

DATA = toy_data()


def brute(x, mirror, dy, dx, fill):
    n, c, h, w = x.shape
    out = np.full_like(x, fill)
    for k in range(n):
        for y in range(h):
            for v in range(w):
                sy, sx = y + dy[k], v + dx[k]
                if 0 <= sy < h and 0 <= sx < w:
                    src = x[k, :, sy, sx]
                    out[k, :, y, w - 1 - v if mirror[k] else v] = src
    return out


@pytest.mark.parametrize("flip,shift,fill", [(0.5, 2, 0.0), (1.0, 0, 0.0), (0.0, 3, -1.0)])
def test_flipshift_equals_brute_force(flip, shift, fill):
    x = np.random.default_rng(0).standard_normal((9, 2, 5, 7))
    y = np.arange(9)
    aug = FlipShift(flip, shift, fill=fill)
    out = aug({"x": x, "y": y}, np.random.default_rng(1))
    rng = np.random.default_rng(1)                    # the same draws, in the same order
    mirror = rng.random(9) < flip
    dy, dx = rng.integers(-shift, shift + 1, size=(2, 9))
    assert np.array_equal(out["x"], brute(x, mirror, dy, dx, fill))
    assert out["y"] is y
    if flip == 0.5:
        assert 0 < mirror.sum() < 9 and (dy != 0).any()


def test_flipshift_refuses_non_images():
    with pytest.raises(KeyError, match="no input 'img'"):
        FlipShift(key="img")({"x": np.zeros((1, 1, 2, 2))}, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"images \(N, C, H, W\), got shape \(3, 4\)"):
        FlipShift()({"x": np.zeros((3, 4))}, np.random.default_rng(0))


def trainer(ckpt=None):
    return Trainer(toy_classifier(), GradientDescentMomentum(0.05, 0.9, 0.0005), batch_size=16, seed=3,
                   dtype="float64", checkpoint=ckpt, progress=False, engine="interpret", schedule=CosineLR(3),
                   augment=FlipShift(0.5, 1))


def test_training_with_augmentation_is_reproducible_and_resumes_exactly(tmp_path):
    ref = trainer()
    ref.fit(DATA, epochs=2)
    plain = Trainer(toy_classifier(), GradientDescentMomentum(0.05, 0.9, 0.0005), batch_size=16, seed=3,
                    dtype="float64", progress=False, engine="interpret", schedule=CosineLR(3))
    plain.fit(DATA, epochs=1)
    assert not np.array_equal(plain.history[0]["loss"], ref.history[0]["loss"])    # augmentation is applied
    ck = str(tmp_path / "ck.npz")
    trainer(ck).fit(DATA, epochs=1)
    again = trainer().resume(ck)
    again.fit(DATA, epochs=2)
    for k in ref.params:
        np.testing.assert_array_equal(ref.params[k], again.params[k])
