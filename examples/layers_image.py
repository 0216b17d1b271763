"""The convolutional front end and the SpatialRNN (ReNet) block: a small ReSeg-style classifier trained on a
synthetic two-class image task with the Trainer, then saved, reloaded and summarised.

Run: python examples/layers_image.py
"""
import tempfile

import numpy as np

import rnnc as rc
import rnnc.nn as nn
from rnnc.train import GradientDescentMomentum, Trainer, load_model, save_model

rng = np.random.default_rng(0)
X = rng.standard_normal((256, 1, 8, 8))
y = (X[:, 0, :4].mean((1, 2)) > X[:, 0, 4:].mean((1, 2))).astype(int)   # brighter top half or not

clf = nn.Classifier((
    nn.Normalizer(2.0), nn.BatchNorm(),
    nn.Conv2d(8, 3, padding=2, dilation=2, activation="relu"), nn.BatchNorm(), nn.MaxPool2d(3, 2, 1),
    nn.SpatialRNN(block=(2, 2), hidden=8), nn.BatchNorm(),
    nn.Conv2d(2, 1, padding=1, activation="relu"), nn.AvgPool2d("all"), nn.Softmax(),
), input_shape=(1, 8, 8))
print(rc.summary(clf, batch=32))

trainer = Trainer(clf, GradientDescentMomentum(0.05, momentum=0.9, weight_decay=0.0005), batch_size=32, seed=0,
                  progress=True)
trainer.fit({"x": X[:192], "y": y[:192]}, epochs=8, val={"x": X[192:], "y": y[192:]})
for row in trainer.history:
    print(row)

with tempfile.TemporaryDirectory() as d:
    save_model(f"{d}/reseg", clf, trainer.params, trainer.buffers)
    clf2, params, buffers = load_model(f"{d}/reseg")
    print("reloaded:", len(params), "params,", len(buffers), "buffers")
