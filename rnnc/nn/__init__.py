"""``rnnc.nn``: layers that add equations to a model (no numerics of their own).

>>> import rnnc as rc, rnnc.nn as nn
>>> m = rc.Model("tagger")
>>> x = m.input("x", 8)
>>> h = nn.LSTM(16)(m, x)
>>> y = nn.Dense(4)(m, h)
"""
from rnnc.nn.base import ACTIVATIONS, LAYERS, BufferSpec, Layer, Network, activate, network, register_layer
from rnnc.nn.cells import Cell, ElmanCell, GRUCell, JordanCell, LSTMCell
from rnnc.nn.classifier import Classifier
from rnnc.nn.layers import (
                            Activation,
                            AvgPool2d,
                            BatchNorm,
                            Conv2d,
                            Dense,
                            Dropout,
                            Flatten,
                            MaxPool2d,
                            Normalizer,
                            Sequential,
                            Softmax,
                            Stack,
)
from rnnc.nn.recurrent import GRU, LSTM, Bidirectional, Elman, Jordan, Recurrent, SpatialRNN
from rnnc.nn.spec import SpecError, from_spec
from rnnc.nn.torch_weights import from_torch, to_torch

__all__ = ["ACTIVATIONS", "LAYERS", "BufferSpec", "Layer", "Network", "activate", "from_spec", "network",
           "register_layer", "Cell", "ElmanCell", "GRUCell", "JordanCell", "LSTMCell", "Activation", "AvgPool2d",
           "BatchNorm", "Conv2d", "Dense", "Dropout", "Flatten", "MaxPool2d", "Normalizer", "Sequential", "Softmax",
           "Stack", "GRU", "LSTM", "Bidirectional", "Elman", "Jordan", "Recurrent", "SpatialRNN", "Classifier",
           "SpecError", "from_torch", "to_torch"]
