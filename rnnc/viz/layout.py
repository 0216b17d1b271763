"""Where each node of an unrolled drawing goes: positions computed here, drawn by Graphviz with pinned nodes.

The drawing is a table of *cells*, one per step (per grid cell of a 2-D recurrence), as in the lecture:

* every cell holds the same *template*: the values drawn at one step, each at one (row, lane). Rows are
  levels of the step's own (undelayed) edges: inputs at the bottom, hidden values above them, outputs and
  the per-step losses ``L[t]`` at the top; an input read only higher up (a target ``y[t]``) stands one row
  below its reader, beside the output. In a 1-D table each recurrent value gets a row of its own, so a
  reverse (``t+1``) chain runs right to left in its own row; other values of a level share a row, side by side;
* cells of one axis stand left to right in step order; a 2-D recurrence is a grid (its first axis down,
  its last across); the blocks of different axes (an encoder's ``t``, a decoder's ``s``) stand side by
  side in axis order;
* an initial value ``h[-1]`` takes the place ``h`` would have at step ``-1``: left of step 0 (right of the
  last step for a reverse chain, above the first row of a grid for ``down[-1, j]``);
* axis-free values (the total loss, a sequence's single output) stand right of the table, one row above
  what they read; params and other axis-free leaves, when drawn, in a row below it;
* an axis longer than ``max_steps`` shows its first steps, an ellipsis and its last step.

Graphviz y grows upwards; positions are in points.
"""
from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

ROW = 62.0          # between rows of a template
GAP = 24.0          # between cells
PAD = 12.0          # between nodes side by side
SHOWN_FIRST = 3     # steps shown before the ellipsis of a long axis
FREE_PER_ROW = 3    # axis-free values side by side right of the table, then a row higher


@dataclass
class Item:
    """A node to place. ``value`` is what the node is an instance of (shared by every step); ``axes`` and
    ``index`` say which step (out of range for an initial value); ``role`` is one of ``value``,
    ``initial``, ``ellipsis`` (steps left out), ``source`` (an axis-free leaf, such as a param) or ``free``
    (another axis-free node); ``loss_term`` marks a per-step loss ``L[t]``, ``backward`` an adjoint ``δh[t]`` of a
    gradient model (drawn above every forward value)."""

    key: Hashable
    value: Hashable
    axes: tuple
    index: tuple
    role: str
    label: str
    loss_term: bool = False
    backward: bool = False
    x: float = 0.0
    y: float = 0.0

    @property
    def width(self) -> float:
        return 30.0 if self.role == "ellipsis" else width_of(self.label)


@dataclass
class Axis:
    """How one axis's indices map to table slots (an ellipsis slot for long axes)."""

    size: int
    max_steps: int | None

    @property
    def elided(self) -> bool:
        return self.max_steps is not None and self.size > self.max_steps

    def slot(self, k: int) -> int | None:
        """The slot of index ``k``; None for a step hidden behind the ellipsis."""
        if not self.elided or k < SHOWN_FIRST:
            return k
        if k >= self.size - 1:
            return k - self.size + SHOWN_FIRST + 2
        return None

    @property
    def ellipsis(self) -> int | None:
        return SHOWN_FIRST if self.elided else None

    def visible(self) -> list[tuple[int | None, int]]:
        """(index or None for the ellipsis, slot) of every in-range column."""
        if not self.elided:
            return [(k, k) for k in range(self.size)]
        return [(k, k) for k in range(SHOWN_FIRST)] + [(None, SHOWN_FIRST), (self.size - 1, SHOWN_FIRST + 1)]


@dataclass
class Table:
    """The placed drawing: items with positions, and step labels ``(text, x, y)`` (y None: below the table)."""

    items: dict
    labels: list = field(default_factory=list)


# Helvetica advance widths (em) of the narrow and wide characters; the rest are about 0.556 em
_EM = {**dict.fromkeys("il.,:;|!'[]() ", 0.25), **dict.fromkeys("frtjI-/", 0.33),
       **dict.fromkeys("mwMW", 0.83), **dict.fromkeys("ABCDEGHKNOQRUVXY", 0.7)}


def width_of(label: str, font: float = 13.0) -> float:
    """A node's drawn width in points, fitted to Graphviz's ellipses around Helvetica 13 pt labels (a
    circle for labels of up to three characters)."""
    if len(label) <= 3:
        return 36.0
    text = font * sum(_EM.get(ch, 0.556) for ch in label)
    return max(54.0, 1.6 * text + 20.0)


def place(items: list[Item], edges: list[tuple], axes: dict) -> Table:
    """Positions for ``items`` (in topological order); ``edges`` are ``(src key, dst key, delayed, label)``;
    ``axes`` maps each loop axis to its :class:`Axis`."""
    by_key = {it.key: it for it in items}
    blocks: dict = {}
    for it in items:
        if it.axes:
            blocks.setdefault(it.axes, []).append(it)
    table = Table(by_key)
    cursor, bottom = 0.0, 0.0
    for block_axes in sorted(blocks, key=lambda a: tuple(x.order for x in a)):
        cursor = _place_block(blocks[block_axes], block_axes, edges, by_key, axes, cursor, table)
    bottom = min((it.y for it in items if it.axes), default=0.0)
    left = min((it.x for it in items if it.axes), default=0.0)
    _place_free(items, edges, by_key, cursor, bottom, left)
    low = min((it.y for it in items), default=0.0) - 0.7 * ROW
    table.labels = [(text, x, low if y is None else y) for text, x, y in table.labels]
    return table


# ----------------------------------------------------------------------------------------------- a block
@dataclass
class Template:
    """Where each value of a block stands inside a cell: ``at[value] = (lane, row)``."""

    at: dict
    rows: int
    lanes: int


def _place_block(members: list, block_axes: tuple, edges: list, by_key: dict, axes: dict, cursor: float,
                 table: Table) -> float:
    """Place one block (the items sharing ``block_axes``) with its left edge at ``cursor``; returns the
    x where the next block may start."""
    tpl = _template(members, edges, by_key, block_axes)
    lane_x, cell_w, node_w = _lanes(members, tpl)
    lane_w = node_w + PAD
    keys = {it.key: it for it in members}
    delayed = [(src, dst, label) for src, dst, is_delayed, label in edges if is_delayed and src in keys and dst in keys]
    label_w = max((5.8 * len(label) + 14.0 for _, _, label in delayed), default=0.0)
    chain_w = max((keys[dst].width for _, dst, _ in delayed), default=node_w)   # what the delayed edges join
    cell_h = tpl.rows * ROW
    init_x = max(lane_w + GAP, chain_w + label_w)
    col_axis = block_axes[-1]
    row_axis = block_axes[0] if len(block_axes) > 1 else None
    last_col = axes[col_axis].visible()[-1][1]
    last_row = axes[row_axis].visible()[-1][1] if row_axis else 0
    step_x, step_y = max(cell_w + GAP, chain_w + label_w), cell_h + GAP
    first_col = min(_slot_of(it, col_axis, axes) for it in members)
    origin = cursor + lane_w / 2 - first_col * init_x
    for it in members:
        lane, row = tpl.at.get(it.value, (0, 0))
        col = _slot_of(it, col_axis, axes)
        cell_row = _slot_of(it, row_axis, axes) if row_axis else 0
        if col < 0:          # initial values stand one lane apart, outside the cells
            it.x = origin + col * init_x
        elif col > last_col:
            it.x = origin + last_col * step_x + lane_x[-1] + (col - last_col) * init_x
        else:
            it.x = origin + col * step_x + lane_x[lane]
        if cell_row < 0:
            it.y = (tpl.rows - 1) * ROW - cell_row * ROW
        elif cell_row > last_row:
            it.y = -last_row * step_y - (cell_row - last_row) * ROW
        else:
            it.y = -cell_row * step_y + row * ROW
    for k, slot in axes[col_axis].visible():
        table.labels.append((_step(col_axis, k), origin + slot * step_x, None))
    if row_axis is not None:
        x = origin + first_col * init_x - 0.8 * lane_w
        for k, slot in axes[row_axis].visible():
            table.labels.append((_step(row_axis, k), x, -slot * step_y + (tpl.rows - 1) * ROW / 2))
    right = max(origin + last_col * step_x + lane_x[-1], max(it.x for it in members))
    return right + lane_w / 2 + GAP


def _lanes(members: list, tpl: Template) -> tuple[list, float, float]:
    """The x of each lane's centre (lane 0 at 0), the width of a cell, and the widest node: each lane as
    wide as its widest node."""
    widths = [0.0] * tpl.lanes
    for it in members:
        if it.role == "value":
            lane = tpl.at[it.value][0]
            widths[lane] = max(widths[lane], it.width + PAD)
    centres = [0.0]
    for a, b in zip(widths, widths[1:]):
        centres.append(centres[-1] + (a + b) / 2)
    return centres, sum(widths), max(widths) - PAD


def _step(axis, k: int | None) -> str:
    return f"{axis.name} = {k}" if k is not None else "…"


def _slot_of(it: Item, axis, axes: dict) -> int:
    """The table slot of ``it`` along ``axis``: negative left of (above) step 0, past the last slot for an
    initial value read after the last step."""
    k = it.index[it.axes.index(axis)]
    spec = axes[axis]
    if k is None:
        return spec.ellipsis
    if k < 0:
        return k
    if k >= spec.size:
        return spec.visible()[-1][1] + (k - spec.size + 1)
    return spec.slot(k)


def _template(members: list, edges: list, by_key: dict, block_axes: tuple) -> Template:
    """Rows are levels; a value recurring along the block's last axis (``t``, or ``j`` of a grid) has a row
    of its own, a value recurring along a grid's first axis (``i``) a lane of its own (left), so chains
    run straight through empty space."""
    order: dict = {}
    for it in members:
        if it.role == "value":
            order.setdefault(it.value, len(order))
    preds: dict = {v: set() for v in order}
    along: dict = {v: set() for v in order}
    for src, dst, delayed, _ in edges:
        a, b = by_key.get(src), by_key.get(dst)
        if a is None or b is None or b.value not in order or a.axes != b.axes:
            continue
        if delayed:
            along[b.value] |= {ax for ax, i, j in zip(a.axes, a.index, b.index) if i != j}
        elif a.role == "value" and a.value in order and a.value != b.value and a.index == b.index:
            preds[b.value].add(a.value)
    values = [it for it in members if it.role == "value"]
    level = _levels(order, preds, {it.value for it in values if it.loss_term},
                    {it.value for it in values if it.backward})
    own_row = {v for v in order if block_axes[-1] in along[v]}
    own_lane = [v for v in order if len(block_axes) > 1 and along[v] - {block_axes[-1]}]
    rows: dict = {}
    for v in sorted(order, key=lambda v: (not preds[v] and not along[v], order[v])):
        rows.setdefault((level[v], order[v] if v in own_row else -1), []).append(v)
    at, lanes = {}, len(own_lane)
    for row, key in enumerate(sorted(rows)):
        shared = [v for v in rows[key] if v not in own_lane]
        for v in rows[key]:
            at[v] = (own_lane.index(v) if v in own_lane else len(own_lane) + shared.index(v), row)
        lanes = max(lanes, len(own_lane) + len(shared))
    return Template(at, len(rows), lanes)


def _levels(order: dict, preds: dict, loss_terms: set, backward: set) -> dict:
    """Longest path of undelayed edges (values in topological order), adjoints above the forward values;
    sources one row below their lowest reader; each per-step loss above whatever else shares its row."""
    level: dict = {}
    for v in order:
        level[v] = 1 + max((level[p] for p in preds[v]), default=-1)
    top = max((level[v] for v in order if v not in backward and v not in loss_terms), default=-1)
    for v in order:
        if v in backward:
            level[v] = max(top + 1, 1 + max((level[p] for p in preds[v]), default=-1))
    for lv in sorted({level[v] for v in loss_terms}, reverse=True):
        if any(level[v] == lv and v not in loss_terms for v in order):
            for v in order:
                if level[v] > lv or (level[v] == lv and v in loss_terms):
                    level[v] += 1
    readers: dict = {v: [] for v in order}
    for v, ps in preds.items():
        for p in ps:
            readers[p].append(v)
    for v in order:
        if not preds[v] and readers[v]:
            level[v] = max(0, min(level[r] for r in readers[v]) - 1)
    return level


# -------------------------------------------------------------------------------------- axis-free items
def _place_free(items: list, edges: list, by_key: dict, right: float, bottom: float, left: float) -> None:
    """Axis-free nodes: readers of the table right of it, one row above what they read; leaves that only
    feed initial values left of them; other leaves (params, lengths) in a row below the table."""
    preds: dict = {}
    readers: dict = {}
    for src, dst, _, _ in edges:
        if src in by_key and dst in by_key:
            preds.setdefault(dst, []).append(by_key[src])
            readers.setdefault(src, []).append(by_key[dst])
    taken: dict = {}
    for it in items:
        if it.axes or it.role not in ("free", "source") or it.key not in preds:
            continue
        y = max(p.y for p in preds[it.key]) + ROW
        while len(taken.get(round(y), [])) >= FREE_PER_ROW:    # a full row: the next one up
            y += ROW
        lane = taken.setdefault(round(y), [])
        it.x, it.y = right + sum(lane) + it.width / 2, y
        lane.append(it.width + 16.0)
    below = bottom - ROW
    for it in reversed(items):
        if it.axes or it.key in preds or it.role == "label":
            continue
        users = readers.get(it.key, [])
        if users and all(u.role == "initial" for u in users):
            first = min(users, key=lambda u: u.x)
            it.x, it.y = first.x - first.width / 2 - 20.0 - it.width / 2, first.y
        elif users and all(not u.axes for u in users):
            it.y = min(u.y for u in users) - ROW
            lane = taken.setdefault(round(it.y), [])
            it.x = right + sum(lane) + it.width / 2
            lane.append(it.width + 16.0)
        else:
            lane = taken.setdefault(("below", round(below)), [])
            it.x, it.y = left + sum(lane), below
            lane.append(it.width + 16.0)
