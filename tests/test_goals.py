"""Issue 21's goals (``tools/goals.py``) on tiles built by hand: each goal is missed by the
tile that breaks it, and only by it."""

import dataclasses

import pytest

from mse_grad_triton.tools import goals, pipe_model
from mse_grad_triton.tools.hivm import Memref, TileBody, Transfer, VectorOp

TILE = 8192


def _gm(shape, strides, dtype="f32") -> Memref:
    return Memref(tuple(shape), dtype, tuple(strides), "gm")


def _body(calls=("vsub", "vmuls", "vmul"), row_loop=False, transfers=None) -> TileBody:
    ops = [VectorOp(f"{name}_1d_float", TILE, TILE * 4, 4, 1, row_loop) for name in calls]
    flat = _gm([TILE], [1])
    return TileBody("tile loop", ops, transfers or [Transfer("in", flat, 2),
                                                     Transfer("out", flat, 1)])


def _modelled(seconds, roofline_seconds, bottleneck="MTE") -> pipe_model.Modelled:
    return pipe_model.Modelled(seconds, 1, roofline_seconds, bottleneck, 40, 1, 1)


def _facts(**changes) -> goals.TileFacts:
    lean = goals.TileFacts(elements=1 << 22, coalesced_rank=1, itemsize=4, guarded=False,
                           body=_body(), ub_fraction=0.9, large=_modelled(1.0, 0.95),
                           large_aclnn=_modelled(1.1, 0.95), aclnn_v2=True)
    return dataclasses.replace(lean, **changes)


def _goals(facts) -> list:
    return [miss.goal for miss in goals.misses(facts)]


def test_a_lean_tile_meets_every_goal():
    assert goals.misses(_facts()) == []


def test_vector_calls_in_per_row_loops_miss_goal_1_on_large_layouts_only():
    looped = _body(row_loop=True)
    assert _goals(_facts(body=looped)) == [1]
    assert _goals(_facts(body=looped, elements=goals.ROW_LOOP_FREE_FROM - 1)) == []


def test_a_transfer_of_one_element_per_run_misses_goal_2():
    stepped = _gm([TILE], [2])   # a stepped slice: every element its own run
    body = _body(transfers=[Transfer("in", stepped, 1), Transfer("out", _gm([TILE], [1]), 1)])
    assert _goals(_facts(body=body)) == [2]
    # A one-element load (a 0-d grad_output) is not a per-element transfer.
    scalar = _body(transfers=[Transfer("in", _gm([1], [1]), 1),
                              Transfer("in", _gm([TILE], [1]), 1)])
    assert _goals(_facts(body=scalar)) == []


def test_high_rank_layouts_need_half_the_ub_and_2_kib_dmas():
    small = _body(transfers=[Transfer("in", _gm([4, 64], [192, 1]), 2),
                             Transfer("out", _gm([4, 64], [192, 1]), 1)])
    assert _goals(_facts(body=small, coalesced_rank=3)) == [3]   # 1 KiB DMAs
    assert _goals(_facts(coalesced_rank=3, ub_fraction=0.4)) == [3]
    assert _goals(_facts(body=small, coalesced_rank=2, ub_fraction=0.4)) == []


@pytest.mark.parametrize("large, aclnn, aclnn_v2, missed", [
    (_modelled(1.0, 0.89), _modelled(1.0, 0.89), True, True),       # under 90 % roofline
    (_modelled(1.0, 0.95, "V"), _modelled(2.0, 0.95), False, True),  # vector-bound
    (_modelled(1.0, 0.95), _modelled(0.99, 0.95), True, True),      # slower than aclnn V2
    (_modelled(1.0, 0.95), _modelled(1.0, 0.95), True, False),      # as fast as aclnn V2
    (_modelled(1.0, 0.95), _modelled(1.19, 0.95), False, True),     # < 1.2x a fallback
    (_modelled(1.0, 0.95), _modelled(1.2, 0.95), False, False),
])
def test_goal_4_roofline_and_aclnn_at_large_sizes(large, aclnn, aclnn_v2, missed):
    facts = _facts(large=large, large_aclnn=aclnn, aclnn_v2=aclnn_v2)
    assert (4 in _goals(facts)) == missed


@pytest.mark.parametrize("itemsize, guarded, limit", [(4, False, 4), (2, False, 8),
                                                      (4, True, 6), (2, True, 10)])
def test_goal_5_allows_aclnns_vector_calls_plus_one_or_three_when_guarded(itemsize, guarded,
                                                                         limit):
    # aclnn V2: Sub, Muls, Mul (fp16/bf16: three casts up and one down besides).
    assert goals.vector_call_limit(itemsize, guarded) == limit
    at_limit = _body(calls=["vsub"] * limit)
    over = _body(calls=["vsub"] * (limit + 1))
    assert _goals(_facts(body=at_limit, itemsize=itemsize, guarded=guarded)) == []
    assert _goals(_facts(body=over, itemsize=itemsize, guarded=guarded)) == [5]


def test_goal_6_is_2x_aclnn_or_90_percent_of_the_roofline_where_2x_is_beyond_it():
    far = _modelled(10.0, 1.0)      # aclnn at 10 % of the roofline: 2x it is the bound
    assert goals.small_call_need(far) == 2.0
    assert goals.small_miss(_modelled(5.0, 1.0), far) is None
    assert goals.small_miss(_modelled(5.1, 1.0), far).goal == 6
    near = _modelled(1.5, 1.0)      # 2x would beat the roofline: 90 % of it is the bound
    assert goals.small_call_need(near) == pytest.approx(0.9 * 1.5)
    assert goals.small_miss(_modelled(1.1, 1.0), near) is None
    assert goals.small_miss(_modelled(1.2, 1.0), near) is not None
