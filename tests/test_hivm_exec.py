"""The compiled kernel, run on the CPU: bishengir-compile's UB-planned HIVM translated to
upstream MLIR (``tools/hivm_exec.py``) and executed against float64 and the interpreter
(``tools/ascend_exec.py``). Needs bishengir-compile and Debian's mlir-19-tools and llvm-19
(``.ci/run`` installs them); elsewhere these tests skip, saying which is missing."""

import os
import platform

import pytest

from mse_grad_triton import chips, triton_compat
from mse_grad_triton.tools import ascend_check, ascend_exec, ave_exec, bishengir, hivm_exec

pytestmark = pytest.mark.skipif(triton_compat.FLAVOUR != "ascend",
                                reason="needs triton-ascend's compiler (upstream Triton here)")


def _compiler_or_skip(toolchain: str) -> bishengir.Compiler:
    """The toolchain's bishengir-compile and the tools the route needs; where one is missing
    the tests skip saying which (and fail under $MSE_GRAD_TRITON_REQUIRE_EXEC, which .ci/run
    sets)."""
    found = bishengir.find_compiler(toolchain)
    missing = hivm_exec.missing_tools()
    why = (f"no {chips.TOOLCHAINS[toolchain].compiler} on {platform.machine()}"
           if found is None else
           f"missing {', '.join(missing)}: apt-get install {' '.join(hivm_exec.PACKAGES)}"
           if missing else "")
    if why:
        if os.environ.get("MSE_GRAD_TRITON_REQUIRE_EXEC"):
            pytest.fail(why)
        pytest.skip(why)
    return found


@pytest.fixture(scope="module")
def compiler():
    """A2/A3's bishengir-compile (see ``_compiler_or_skip``)."""
    return _compiler_or_skip("a2_a3")


@pytest.fixture(scope="module")
def compiler_950():
    """The 950 series' bishengir-compile-a5 (see ``_compiler_or_skip``)."""
    return _compiler_or_skip("910_95")


@pytest.fixture
def cache(tmp_path):
    return tmp_path


F32, F16, BF16 = ("f32",) * 4, ("f16",) * 4, ("bf16",) * 4


def _launcher_case(layout, dtypes, negated=False, reduction=1, toolchain="a2_a3", tile=0):
    """The launcher's default tile (``tile`` 0) or a smaller one it shrinks to."""
    return ascend_check.launcher_cases(layout, dtypes, negated, reduction, toolchain)[tile]


def _assert_runs_and_matches(case, compiler, cache) -> None:
    """The case's compiled form over several programs: at the small shape bit for bit the
    interpreter's, at the gate's within the ULP budgets."""
    small = ascend_exec.run_case(case, "small", compiler, cache)
    assert not small.problem, small.problem
    assert small.programs > 1 and small.bitwise is True
    gate = ascend_exec.run_case(case, "gate", compiler, cache)
    assert not gate.problem and not gate.skipped, (gate.problem, gate.skipped)
    assert gate.programs > 1 and gate.worst_ulp <= 4


@pytest.mark.parametrize("layout, dtypes, negated, reduction", [
    ("flat", F32, False, 1),                 # the guarded order: abs, compare, selects
    ("flat_scalar_grad", BF16, True, 1),     # casts both ways, both outputs
    ("rows_of_3", BF16, False, 1),           # short rows, broadcast operands
    ("transposed_self", F32, False, 0),      # the on-chip turn (vtranspose)
    ("rows_of_4", F32, False, 1),            # short rows moved flat, the target repeated
                                             # on chip (vinterleave)
    ("expanded_grad", F32, False, 1),        # the guarded order on a [1, C] grad: its mask
                                             # broadcast (an i1 cast, vbrc, vcmp, vnot)
    ("stepped_self", BF16, False, 1),        # a stepped slice: each row's run, thinned on
                                             # chip (vdeinterleave)
    ("channels_last_self", BF16, False, 1),  # a turned operand moved as one run
])
def test_the_compiled_form_matches_float64_and_the_interpreter(compiler, cache, layout,
                                                               dtypes, negated, reduction):
    case = _launcher_case(layout, dtypes, negated, reduction)
    _assert_runs_and_matches(case, compiler, cache)


def test_a_misplaced_buffer_is_caught(compiler, cache):
    # The negative control: the buffer planned at the second offset moved onto the first,
    # which is live at the same time (in the product-first order: in the guarded one the
    # second offset holds a buffer that is dead while the first is live).
    case = _launcher_case("flat", F32, reduction=0)
    assert not ascend_exec.run_case(case, "small", compiler, cache).problem
    broken = ascend_exec.run_case(case, "small", compiler, cache, misplace=True)
    assert broken.problem, "moving a planned buffer onto a live one went unnoticed"


def test_an_op_the_table_does_not_know_fails_loudly():
    ub = "memref<64xf32, #hivm.address_space<ub>>"
    planned = f"""module attributes {{}} {{
  func.func @k(%arg0: memref<?xf32, #hivm.address_space<gm>>) attributes {{hacc.entry}} {{
    %c0_i64 = arith.constant 0 : i64
    %0 = hivm.hir.pointer_cast(%c0_i64) : {ub}
    hivm.hir.vexp ins(%0 : {ub}) outs(%0 : {ub})
    return
  }}
}}
"""
    with pytest.raises(hivm_exec.UnknownHivm, match="vexp"):
        hivm_exec.translate(planned, 1024)
    rounding = planned.replace("vexp ins", "vcast ins").replace(
        f"outs(%0 : {ub})", f"outs(%0 : {ub}) round_mode = <floor>")
    with pytest.raises(hivm_exec.UnknownHivm, match="round_mode"):
        hivm_exec.translate(rounding, 1024)
    # From i1 (0 or 1) any rounding mode converts exactly: the compiler casts a mask it
    # broadcasts with <trunc>.
    mask = "memref<64xi1, #hivm.address_space<ub>>"
    from_mask = rounding.replace(f"vcast ins(%0 : {ub})", f"vcast ins(%1 : {mask})").replace(
        "    hivm.hir.vcast", f"    %1 = hivm.hir.pointer_cast(%c0_i64) : {mask}\n"
        "    hivm.hir.vcast").replace("<floor>", "<trunc>")
    assert "arith.uitofp" in hivm_exec.translate(from_mask, 1024)[0]


def test_an_interleave_of_other_than_two_channels_fails_loudly():
    def planned(channels):
        ub = "memref<64xf32, #hivm.address_space<ub>>"
        wide = "memref<128xf32, #hivm.address_space<ub>>"
        op = (f"hivm.hir.vinterleave ins(%0, %0 : {ub}, {ub}) outs(%1 : {wide}) "
              f"interleave_channel_nums = {channels}")
        return f"""module attributes {{}} {{
  func.func @k(%arg0: memref<?xf32, #hivm.address_space<gm>>) attributes {{hacc.entry}} {{
    %c0_i64 = arith.constant 0 : i64
    %c256_i64 = arith.constant 256 : i64
    %0 = hivm.hir.pointer_cast(%c0_i64) : {ub}
    %1 = hivm.hir.pointer_cast(%c256_i64) : {wide}
    {op}
    return
  }}
}}
"""
    mlir, _ = hivm_exec.translate(planned(2), 1024)
    assert "floordiv 2" in mlir and "linalg.index 0" in mlir
    with pytest.raises(hivm_exec.UnknownHivm, match="interleave_channel_nums = 3"):
        hivm_exec.translate(planned(3), 1024)


def test_planned_buffers_become_views_of_one_pool():
    planned = """module attributes {} {
  func.func @k(%arg0: memref<?xf32, #hivm.address_space<gm>>) attributes {hacc.entry} {
    %c64_i64 = arith.constant 64 : i64
    %0 = hivm.hir.pointer_cast(%c64_i64) : memref<16xf32, #hivm.address_space<ub>>
    %1 = hivm.hir.pointer_cast(%c64_i64) : memref<16xi1, #hivm.address_space<ub>>
    hivm.hir.set_flag[<PIPE_MTE2>, <PIPE_V>, <EVENT_ID0>]
    return
  }
}
"""
    mlir, entry = hivm_exec.translate(planned, 1024)
    assert entry == "k" and "hivm" not in mlir and "set_flag" not in mlir
    assert "memref.view %hx_pool[" in mlir and "memref.view %hx_bits[" in mlir
    assert "arith.muli %c64_i64, %hx_c8" in mlir   # an i1 buffer: byte offset x 8 bits
    assert "%hx_pool: memref<1024xi8>, %hx_bits: memref<8192xi8>, %hx_block: i64" in mlir


def test_every_assumed_semantic_names_its_source():
    assert all(meaning and source for meaning, source in hivm_exec.SEMANTICS.values())


# --- the 950 series: vector functions of register ops (tools/ave_exec.py) -------------------

def test_a_deinterleave_of_other_than_two_channels_fails_loudly():
    def planned(attributes):
        ub = "memref<128xf32, #hivm.address_space<ub>>"
        half = "memref<64xf32, #hivm.address_space<ub>>"
        return f"""module attributes {{}} {{
  func.func @k(%arg0: memref<?xf32, #hivm.address_space<gm>>) attributes {{hacc.entry}} {{
    %c0_i64 = arith.constant 0 : i64
    %c512_i64 = arith.constant 512 : i64
    %0 = hivm.hir.pointer_cast(%c0_i64) : {ub}
    %1 = hivm.hir.pointer_cast(%c512_i64) : {half}
    hivm.hir.vdeinterleave ins(%0 : {ub}) outs(%1 : {half}) {attributes}
    return
  }}
}}
"""
    for channel in (0, 1):
        mlir, _ = hivm_exec.translate(planned(f"channel_num = 2 index_mode = <CHANNEL_{channel}>"),
                                      1024)
        assert f"d0 * 2 + {channel}" in mlir
    with pytest.raises(hivm_exec.UnknownHivm, match="vdeinterleave"):
        hivm_exec.translate(planned("channel_num = 4 index_mode = <CHANNEL_0>"), 1024)


# sliced_rows_of_4 (rows of 4 at a row stride of 64: a 2-D tile; contiguous rows of 4 move
# flat) at the launcher's second tile (512 rows): the small shape's 3001 rows then make whole
# tiles (the unaligned, interleaving vector function) and a partial one.
@pytest.mark.parametrize("layout, dtypes, negated, reduction, tile", [
    ("flat", F32, False, 1, 0),              # the guarded order: abs, compare, selects
    ("flat_scalar_grad", BF16, True, 1, 0),  # broadcast loads, one-point stores, both outputs
    ("sliced_rows_of_4", BF16, False, 1, 1),  # unaligned rows: packed streams,
                                              # (de)interleave
    ("rows_of_4", BF16, False, 1, 2),        # short rows moved flat, the target repeated
                                             # (vintlv), at the smallest tile: 12 tiles
    ("transposed_out", F16, False, 1, 0),    # the on-chip turn: index vectors and gathers
    ("expanded_grad", F32, False, 1, 1),     # a held row's order mask, spilled to UB once
                                             # per program and reloaded in every tile
])
def test_the_950s_compiled_form_matches_float64_and_the_interpreter(compiler_950, cache, layout,
                                                                    dtypes, negated, reduction,
                                                                    tile):
    case = _launcher_case(layout, dtypes, negated, reduction, "910_95", tile)
    _assert_runs_and_matches(case, compiler_950, cache)


def test_a_wrong_lane_order_is_caught(compiler_950, cache, monkeypatch):
    # The inferred interleave semantics are not self-fulfilling: with vdintlv's two results
    # swapped (odd elements first), the unaligned rows store the undefined halves.
    case = _launcher_case("sliced_rows_of_4", BF16, toolchain="910_95", tile=1)
    right = ascend_exec.run_case(case, "small", compiler_950, cache)
    assert not right.problem and right.programs > 1
    deinterleave = ave_exec.VectorFunction.op_vdintlv

    def swapped(self, results, *rest):
        deinterleave(self, results[::-1], *rest)

    monkeypatch.setattr(ave_exec.VectorFunction, "op_vdintlv", swapped)
    broken = ascend_exec.run_case(case, "small", compiler_950, cache)
    assert broken.problem, "a wrong deinterleave went unnoticed"


def test_a_wrong_mask_reload_is_caught(compiler_950, cache, monkeypatch):
    # The held row's mask goes through UB (masked_store NORM_B8, vload NORM of an i1
    # vector): reloaded inverted, the tiles take the other evaluation order, whose rounding
    # differs from the interpreter's.
    case = _launcher_case("expanded_grad", F32, toolchain="910_95", tile=1)
    load = ave_exec.VectorFunction.op_vload
    inverted = []

    def inverting(self, results, operands, types, alignment, unaligned, out):
        load(self, results, operands, types, alignment, unaligned, out)
        if types.endswith("xi1>"):
            true, flipped = self.fresh(), self.fresh()
            out += [f"{true} = arith.constant dense<true> : {self.types[results[0]]}",
                    f"{flipped} = arith.xori {results[0]}, {true} : {self.types[results[0]]}"]
            self.types[flipped] = self.types[results[0]]
            self.aliases[results[0]] = flipped
            inverted.append(results[0])

    monkeypatch.setattr(ave_exec.VectorFunction, "op_vload", inverting)
    broken = ascend_exec.run_case(case, "small", compiler_950, cache)
    assert inverted and broken.problem, "an inverted mask reload went unnoticed"


def _vector_function(body: str) -> str:
    ub = "memref<64xf32, #hivm.address_space<ub>>"
    return f"""module attributes {{}} {{
  func.func @k_outlined_vf_0(%arg0: {ub}) attributes {{hivm.vector_function, no_inline}} {{
    %c0 = arith.constant 0 : index
{body}
    return
  }}
  func.func @k(%arg0: memref<?xf32, #hivm.address_space<gm>>) attributes {{hacc.entry}} {{
    %c0_i64 = arith.constant 0 : i64
    %0 = hivm.hir.pointer_cast(%c0_i64) : {ub}
    func.call @k_outlined_vf_0(%0) {{hivm.vector_function, no_inline}} : ({ub}) -> ()
    return
  }}
}}
"""


def test_a_register_op_the_table_does_not_know_fails_loudly():
    load = ("    %res = ave.hir.vload <NORM> %arg0[%c0] {element_alignment_bit_width = 32 : i32, "
            "functionType = #ave.func_dist_type<norm>} : memref<64xf32, "
            "#hivm.address_space<ub>> into vector<64xf32>")
    mlir, _ = hivm_exec.translate(_vector_function(load), 1024)
    assert "vector.load" in mlir and "ave." not in mlir and "hivm" not in mlir
    exp = load + ("\n    %1 = ave.hir.vexp %res {element_alignment_bit_width = 32 : i32} : "
                  "vector<64xf32>")
    with pytest.raises(hivm_exec.UnknownHivm, match="vexp"):
        hivm_exec.translate(_vector_function(exp), 1024)
    odd = load.replace("<NORM>", "<DINTLV_B32>")
    with pytest.raises(hivm_exec.UnknownHivm, match="DINTLV_B32"):
        hivm_exec.translate(_vector_function(odd), 1024)
    hinted = load.replace("functionType", "hivm.unknown_hint, functionType")
    with pytest.raises(hivm_exec.UnknownHivm, match="unknown_hint"):
        hivm_exec.translate(_vector_function(hinted), 1024)


def test_every_assumed_register_semantic_names_its_source():
    assert all(meaning and source for meaning, source in ave_exec.SEMANTICS.values())
