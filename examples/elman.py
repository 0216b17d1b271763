"""The Elman network of the lecture, as a MODEL.py file for the ``rnnc`` command line.

.. math::

    h_t = \\tanh(U x_t + W h_{t-1} + b), \\qquad o_t = V h_t + c, \\qquad
    L = \\frac{1}{B}\\sum_b \\sum_t \\mathrm{CE}(\\mathrm{softmax}(o_t), y_t)

Try ``rnnc schedule examples/elman.py`` or ``rnnc render examples/elman.py --unroll t=4 -o elman.svg``.
"""
import rnnc as rc
from rnnc import t

model = rc.Model("elman")
x = model.input("x", 8)                          # x[t]: shape (8,); array (T, B, 8)
y = model.input("y", (), dtype="int64")          # class index per step; array (T, B)
U = model.param("U", (16, 8))
W = model.param("W", (16, 16))
b = model.param("b", 16, init="zeros")
V = model.param("V", (4, 16))
c = model.param("c", 4, init="zeros")
h = model.signal("h", 16)
h[t] = rc.tanh(U @ x[t] + W @ h[t-1] + b)        # h[-1] reads the initial value (zeros)
o = V @ h[t] + c
model.output("o", o)
model.loss(rc.softmax_cross_entropy(o, y[t]))
