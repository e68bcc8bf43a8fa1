"""The reader of bishengir-compile's final HIVM (``tools/hivm.py``), on two abridged modules
in ``tests/hivm/`` whose every figure is counted by hand below."""

from pathlib import Path

import pytest

from mse_grad_triton.tools import hivm

HERE = Path(__file__).resolve().parent / "hivm"


def _read(name: str) -> hivm.Hivm:
    return hivm.read((HERE / f"{name}.mlir").read_text())


def test_a_flat_tile_and_its_masked_last_tile():
    module = _read("flat_f32_1024")
    assert module.spec == {"VECTOR_CORE_COUNT": 40, "UB_SIZE": 1572864}
    assert [b.label for b in module.bodies] == ["tile loop", "last tile"]
    tile = module.tile
    assert tile.label == "tile loop"  # not the masked last tile, which runs once per call
    assert [(op.name, op.elements, op.span_bytes, op.itemsize, op.calls)
            for op in tile.vector_ops] == [("vsub_1d_float", 1024, 4096, 4, 1),
                                           ("vmuls_vs_1d_float", 1024, 4096, 4, 1)]
    assert [(t.direction, t.bytes, t.burst_bytes, t.innermost_stride)
            for t in tile.transfers] == [("in", 4096, 4096, 1), ("in", 4096, 4096, 1),
                                         ("out", 4096, 4096, 1)]
    assert (tile.barriers, tile.flags, tile.scalar_gm_accesses, tile.scalar_ub_accesses) \
        == (1, 6, 0, 0)
    assert tile.row_loop_calls == 0 and module.bodies[1].vector_calls == 1


def test_a_short_row_tile_with_a_per_row_loop():
    tile = _read("rows_of_4_f32").tile
    vabs, vcmp = tile.vector_ops
    # 64 rows of 4 fp32 padded to 8: the 2-D vabs walks rows 0..63 at a stride of 8,
    # 63 * 8 + 4 = 508 elements = 2032 bytes; the compare runs once per row on 4 elements.
    assert (vabs.elements, vabs.span_bytes, vabs.calls, vabs.in_row_loop) == (256, 2032, 1,
                                                                             False)
    assert (vcmp.name, vcmp.elements, vcmp.span_bytes, vcmp.calls, vcmp.in_row_loop) \
        == ("vcmp_le_1d_float", 4, 16, 64, True)
    assert tile.vector_calls == 65 and tile.row_loop_calls == 64
    assert tile.scalar_ub_accesses == 64  # the memref.load in the row loop
    self_in, target_in, out = tile.transfers
    # [64, 4] at [4, 1] is one run in global memory, but each row lands in a UB row padded
    # to 8: a 16-B packet per row (the store likewise).
    assert (self_in.bytes, self_in.burst_bytes) == (1024, 16)
    assert (target_in.bytes, target_in.burst_bytes) == (256, 4)  # [64, 1] at [2, 1]: 4 B each
    assert (out.direction, out.bytes, out.burst_bytes) == ("out", 1024, 16)


@pytest.mark.parametrize("text, shape, strides, burst, span", [
    ("memref<8192xf32, #hivm.address_space<ub>>", (8192,), (1,), 8192, 8192),
    ("memref<256x4xf32, strided<[8, 1]>, #hivm.address_space<ub>>", (256, 4), (8, 1), 4, 2044),
    ("memref<2x4096xbf16, strided<[?, 1], offset: ?>, #hivm.address_space<gm>>", (2, 4096),
     (None, 1), 4096, 8192),
    ("memref<1x16384x8xf32, strided<[131072, 8, 1]>>", (1, 16384, 8), (131072, 8, 1),
     131072, 131072),
])
def test_memref_types(text, shape, strides, burst, span):
    memref = hivm.parse_memref(text)
    assert (memref.shape, memref.strides, memref.burst, memref.span) == (shape, strides, burst,
                                                                         span)


def test_the_950s_register_based_tile():
    # bishengir-compile-a5: control flow as blocks, vector work in outlined vector functions.
    module = _read("a5_flat_f32_4096")
    assert module.spec["VECTOR_CORE_COUNT"] == 72 and module.spec["UB_SIZE"] == 2031616
    tile = module.tile
    assert tile.label.startswith("tile loop")
    # The compute instructions of the vector function's loop, once per call; its register
    # loads and stores, mask generation and the broadcast before the loop are not counted.
    assert [(op.name, op.elements, op.span_bytes, op.itemsize, op.calls, op.in_row_loop)
            for op in tile.vector_ops] == [("vsub.s.x", 64, 256, 4, 1, False),
                                           ("vmuls.s.x", 64, 256, 4, 1, False)]
    assert [(t.direction, t.bytes, t.burst_bytes) for t in tile.transfers] == [
        ("in", 16384, 16384), ("in", 16384, 16384), ("out", 16384, 16384)]
    assert (tile.barriers, tile.flags) == (0, 5)
    # After the loop (the branch back to its header): the second function's nested loops,
    # its walk over a 2-D tile: each instruction once, none a per-row loop.
    last = module.bodies[1]
    assert [(op.name, op.itemsize, op.in_row_loop) for op in last.vector_ops] == [
        ("vabs.x", 2, False), ("vcmp.le.s.z", 2, False)]
    assert last.row_loop_calls == 0 and last.barriers == 1


def test_every_library_call_on_ub_only_is_vector_work():
    # An on-chip turn (tl.trans) and an interleave are library calls on UB memrefs: counted
    # (a DMA, which has a global side, is not).
    ub = "memref<64x64xf32, #hivm.address_space<ub>>"
    text = "\n".join([
        "module {",
        "  func.func @kernel(%arg4: memref<?xf32, #hivm.address_space<gm>>) attributes "
        "{hacc.entry} {",
        "    scf.for %arg9 = %lo to %hi step %st  : i32 {",
        f"      %a = hivm.hir.pointer_cast(%c0_i64) : {ub}",
        f"      %b = hivm.hir.pointer_cast(%c16384_i64) : {ub}",
        f"      func.call @transpose_2d_with_last_axis_float(%a, %b) : ({ub}, {ub}) -> ()",
        f"      func.call @interleave_1d_float(%a, %b) : ({ub}, {ub}) -> ()",
        "    }",
        "    return",
        "  }",
        "}"])
    tile = hivm.read(text).tile
    assert [(op.name, op.elements, op.span_bytes) for op in tile.vector_ops] == [
        ("transpose_2d_with_last_axis_float", 4096, 16384),
        ("interleave_1d_float", 4096, 16384)]
    assert tile.vector_calls == 2 and not tile.transfers
