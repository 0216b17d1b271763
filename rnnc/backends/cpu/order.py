"""The order in which a stage's nodes are rendered."""
from __future__ import annotations

import dataclasses
import heapq

from rnnc.passes.fuse import FUSABLE


def stable_order(graph, order: dict, stage):
    """The stage's nodes in a deterministic dependency order (ties by position ``order[node]`` in
    ``graph.nodes``), so the generated source, and with it the cache key, is the same in every process. Shifted
    references come first; then runs of one kind are kept together (elementwise code while any is ready, then
    products...), so sibling elementwise loops end up adjacent and can share a loop nest."""
    members = set(stage.nodes)
    deps = {n: {i for i in n.inputs if i in members} for n in stage.nodes}
    for n in stage.nodes:
        if n.op == "ref" and not n.attr("offset") and graph.value_of(n) in members:
            deps[n].add(graph.value_of(n))
    users: dict = {n: [] for n in stage.nodes}
    for n, ds in deps.items():
        for d in ds:
            users[d].append(n)

    def kind(n) -> int:
        if n.op == "ref":
            return 0 if n.attr("offset") else 2      # a same-step reference has no code: elementwise glue
        return 2 if n.op in FUSABLE or n.op == "fused" else 1

    left = {n: len(ds) for n, ds in deps.items()}
    ready: dict = {0: [], 1: [], 2: []}
    for n, k in left.items():
        if k == 0:
            heapq.heappush(ready[kind(n)], (order[n], n.id, n))
    out, last = [], 1
    while any(ready.values()):
        k = 0 if ready[0] else (last if ready[last] else 3 - last)
        n = heapq.heappop(ready[k])[-1]
        last = k or last
        out.append(n)
        for u in users[n]:
            left[u] -= 1
            if left[u] == 0:
                heapq.heappush(ready[kind(u)], (order[u], u.id, u))
    if len(out) != len(stage.nodes):
        return stage
    return dataclasses.replace(stage, nodes=tuple(out))
