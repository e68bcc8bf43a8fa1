"""What the compiled Ascend tile of each launcher default should reach (issue 21), judged on
the pipe model: **modelled, not measured** (``pipe_model.py``, Huawei's 910B figures).

One definition of each goal, which the gate reports beside its model table (and fails on
with ``--enforce-goals``):

1. no vector instruction in a per-row loop, for a layout of ``ROW_LOOP_FREE_FROM`` elements
   or more;
2. no per-element transfers (an operand moved one element per unit-stride run: the
   element-strided forms pad each element to a 32-byte UB slot);
3. a high-rank layout (``HIGH_RANK`` coalesced dimensions or more): a tile of at least
   ``MIN_HIGH_RANK_UB`` of the UB, every DMA at least ``MIN_HIGH_RANK_DMA_BYTES``;
4. at ``LARGE_ELEMENTS`` or more (the layout's outermost dimension scaled up: the same
   compiled tile, more of them): at least ``MIN_ROOFLINE`` of the modelled roofline with the
   MTE pipe the bottleneck, and at least ``MIN_VS_ACLNN_V2`` times modelled aclnn where aclnn
   runs its V2 kernel (``MIN_VS_ACLNN_FALLBACK`` where it falls back to V1 or copies first);
5. vector instructions per tile at most aclnn's V2 tile's + ``EXTRA_VECTOR_CALLS`` (+
   ``EXTRA_VECTOR_CALLS_GUARDED`` in the guarded evaluation order: a full grad_output with
   mean, where the range guarantee needs per-element work);
6. small tensors (``SMALL_ELEMENTS``): at least ``MIN_SMALL_VS_ACLNN`` times modelled aclnn,
   whose grid keeps only ceil(N / 12288) cores busy (checked on the flat layouts, at the tile
   the launcher shrinks to) — or, where that would beat ``MIN_ROOFLINE`` of the modelled
   roofline (aclnn is within 2x of it from about 2**19 elements on), ``MIN_ROOFLINE`` of it.

``misses`` names each miss by its goal's number, so that two chips' misses of one goal (at
their own figures) are told as one.
"""

import dataclasses
from typing import List, NamedTuple, Optional

from . import pipe_model
from .hivm import TileBody

ROW_LOOP_FREE_FROM = 1 << 16
HIGH_RANK = 3
MIN_HIGH_RANK_UB = 0.5
MIN_HIGH_RANK_DMA_BYTES = 2048
LARGE_ELEMENTS = 1 << 24
MIN_ROOFLINE = 0.90
MIN_VS_ACLNN_V2 = 1.0
MIN_VS_ACLNN_FALLBACK = 1.2
EXTRA_VECTOR_CALLS = 1
EXTRA_VECTOR_CALLS_GUARDED = 3
SMALL_ELEMENTS = (1 << 16, 1 << 18, 1 << 20)
MIN_SMALL_VS_ACLNN = 2.0


@dataclasses.dataclass(frozen=True)
class TileFacts:
    """What the gate read off one launcher default: its layout and compiled tile, and the
    model of it and of aclnn at ``LARGE_ELEMENTS`` or more."""

    elements: int              # of the layout's output, at the size the gate compiles
    coalesced_rank: int        # dimensions left after coalescing (layout.Layout.sizes)
    itemsize: int              # self's: what aclnn's tile computes in
    guarded: bool              # the guarded evaluation order (kernels.GUARDED)
    body: TileBody
    ub_fraction: float         # the planned UB over the UB's size
    large: pipe_model.Modelled
    large_aclnn: pipe_model.Modelled
    aclnn_v2: bool             # aclnn runs V2 on these operands (no V1 fallback, no copy)


def vector_call_limit(itemsize: int, guarded: bool) -> int:
    """The most vector instructions a tile may take: aclnn V2's for the dtype + the extra."""
    aclnn = pipe_model.aclnn_tile(itemsize, 1).vector_calls
    return aclnn + (EXTRA_VECTOR_CALLS_GUARDED if guarded else EXTRA_VECTOR_CALLS)


def per_element_transfers(body: TileBody) -> int:
    """DMAs of more than one element whose unit-stride run is one element."""
    return sum(t.calls for t in body.transfers if t.memref.elements > 1 and t.memref.burst == 1)


class Miss(NamedTuple):
    goal: int    # its number above; a goal a tile misses twice (high rank) counts as 3 and 3
    text: str    # the figure and its bound


def misses(facts: TileFacts) -> List[Miss]:
    """The goals (1-5) this tile misses, each with its figure and its bound."""
    found, body = [], facts.body
    if facts.elements >= ROW_LOOP_FREE_FROM and body.row_loop_calls:
        found.append(Miss(1, f"{body.row_loop_calls} vector calls in per-row loops"))
    if per_element_transfers(body):
        found.append(Miss(2, f"{per_element_transfers(body)} per-element DMAs"))
    if facts.coalesced_rank >= HIGH_RANK:
        if facts.ub_fraction < MIN_HIGH_RANK_UB:
            found.append(Miss(3, f"high rank: tile {facts.ub_fraction:.0%} of the UB < "
                                 f"{MIN_HIGH_RANK_UB:.0%}"))
        smallest = min((t.bytes for t in body.transfers if t.memref.elements > 1), default=0)
        if smallest < MIN_HIGH_RANK_DMA_BYTES:
            found.append(Miss(3, f"high rank: DMA of {smallest} B < "
                                 f"{MIN_HIGH_RANK_DMA_BYTES} B"))
    large, aclnn = facts.large, facts.large_aclnn
    if large.roofline_fraction < MIN_ROOFLINE or large.bottleneck != "MTE":
        found.append(Miss(4, f"roofline {large.roofline_fraction:.0%} ({large.bottleneck}-"
                             f"bound) < {MIN_ROOFLINE:.0%} MTE-bound"))
    needed = MIN_VS_ACLNN_V2 if facts.aclnn_v2 else MIN_VS_ACLNN_FALLBACK
    if aclnn.seconds / large.seconds < needed:
        found.append(Miss(4, f"{aclnn.seconds / large.seconds:.3f}x aclnn < {needed:.1f}x"))
    limit = vector_call_limit(facts.itemsize, facts.guarded)
    if body.vector_calls > limit:
        found.append(Miss(5, f"{body.vector_calls} vector calls > {limit}"))
    return found


def small_call_need(aclnn: pipe_model.Modelled) -> float:
    """Goal 6's bound on a small call's speed-up over aclnn: ``MIN_SMALL_VS_ACLNN``, or what
    ``MIN_ROOFLINE`` of the roofline allows where that is less."""
    return min(MIN_SMALL_VS_ACLNN, MIN_ROOFLINE * aclnn.seconds / aclnn.roofline_seconds)


def small_miss(ours: pipe_model.Modelled, aclnn: pipe_model.Modelled) -> Optional[Miss]:
    """Goal 6 for one small call, or None where it is met."""
    ratio, needed = aclnn.seconds / ours.seconds, small_call_need(aclnn)
    if ratio < needed:
        return Miss(6, f"{ratio:.3f}x aclnn < {needed:.2f}x")
    return None
