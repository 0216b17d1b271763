"""Moving a product per step from a map stage into the reverse scan that reads it (:func:`sink_step_products`),
before rendering: the renderer keeps a value a scan computes and reads only in its own step in a one-step buffer,
where a map stage's result is stored for every step."""
from __future__ import annotations

from rnnc.ir.graph import Graph
from rnnc.schedule.schedule import Schedule

#: a product moved into a reverse scan (sink_step_products) sums at most this many terms per element: a few
#: multiply-adds per element and step (an LSTM's V' dz over 10 classes), not a language model's 10,000-word
#: output layer, which stays one large product
SINK_MAX_TERMS = 64


def sink_step_products(graph: Graph, schedule: Schedule) -> Schedule:
    """``schedule`` with each product on an axis-free operand (``x[t] @ W``) that a map stage computes for every
    step and only one later *reverse* scan along that axis reads moved into that scan: a product per step, read
    in its own step, needs a one-step buffer instead of one of ``n`` steps (an LSTM gradient's
    :math:`V^\\top \\bar z` of the softmax's logits). A forward scan's input products (``U x[t]``) stay one large
    product: in a gradient kernel the gates are written over them and the gates' adjoints over the gates
    (:mod:`rnnc.backends.cpu.inplace`), so a product per step would save no memory there. A named value, a
    root, a reference's initial value and a product of more than :data:`SINK_MAX_TERMS` terms per element stay
    where they are."""
    stage_of = {n: k for k, s in enumerate(schedule) for n in s.nodes}
    users: dict = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i, set()).add(stage_of.get(n))
    keep = set(graph.roots()) | {i for r in graph.refs() for i in r.inputs}
    moved: dict = {}                       # node -> the scan stage it moves to
    for k, stage in enumerate(schedule):
        if stage.kind != "map":
            continue
        for n in stage.nodes:
            into = users.get(n, set())
            if n.op != "matmul" or n in keep or len(into) != 1 or not any(not i.axes for i in n.inputs) \
                    or not all(i.shape and i.shape[-1] <= SINK_MAX_TERMS for i in n.inputs if i.axes):
                continue
            (j,) = into
            if j is not None and j > k and schedule[j].kind == "scan" and schedule[j].direction < 0 \
                    and schedule[j].axis in n.axes:
                moved[n] = j
    if not moved:
        return schedule
    stages = []
    for k, stage in enumerate(schedule):
        nodes = tuple(n for n in stage.nodes if n not in moved)
        nodes = tuple(n for n in moved if moved[n] == k) + nodes
        if nodes:
            stages.append(type(stage)(stage.kind, nodes, stage.axis, stage.direction))
    return Schedule(stages, graph)
