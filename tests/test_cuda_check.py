"""The CUDA compile check: its PTX reader on known code, its verdicts, and a quick run."""

import os
import subprocess
import sys

import pytest

from mse_grad_triton import triton_compat
from mse_grad_triton.tools import cuda_check
from mse_grad_triton.tools.cuda_check import Case, access_widths, check_case

pytestmark = pytest.mark.skipif(triton_compat.FLAVOUR != "upstream",
                                reason="needs upstream Triton's NVIDIA backend (triton-ascend "
                                       "here)")

F32 = ("f32",) * 4

PTX = """
	ld.param.b64 	%rd3, [k_param_0];
	ld.param.b64 	%rd4, [k_param_1];
	ld.param.b32 	%r7, [k_param_2];
	mul.wide.s32 	%rd5, %r7, 4;
	add.s64 	%rd6, %rd4, %rd5;
	@%p1 ld.global.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd6 + 0 ];
	ld.global.b32 	%r9, [%rd3];
	add.s64 	%rd8, %rd6, 16;
	@%p2 st.global.v2.b16 [ %rd8 + 0 ], { %rs1, %rs2 };
"""


def test_accesses_are_attributed_to_the_pointer_they_derive_from():
    # param 2 is an integer: its arithmetic makes an offset, not a pointer of its own.
    assert access_widths(PTX, num_pointers=2) == {0: [32], 1: [128, 32]}


def test_flat_float32_is_16_byte_vectors_without_spills():
    for result in check_case(Case("flat", F32, 2048, 8), cuda_check.ARCHS):
        assert not result.problems, result.problems
        # Full tiles: 16-byte vectors; the masked last tile (*) element by element.
        assert [result.widths[name] for name in cuda_check.OPERANDS] == ["128*"] * 4 + ["-"]
        assert result.registers > 0 and result.spill_bytes == 0 and result.stack_bytes == 0


def test_scalar_grad_is_one_scalar_load():
    (result,) = check_case(Case("flat_scalar_grad", ("bf16",) * 4, 2048, 8), (90,))
    assert not result.problems
    assert result.widths["grad_output"] == "16" and result.widths["self"] == "128*"


def test_narrow_access_to_a_unit_stride_operand_fails(monkeypatch):
    monkeypatch.setattr(cuda_check, "access_widths",
                        lambda ptx, num_pointers: {0: [128], 1: [32], 2: [128], 3: [128], 4: []})
    (result,) = check_case(Case("flat", F32, 2048, 8), (90,))
    assert result.problems == ["self accessed 32-bit, 64+ possible"]
    # A stepped slice cannot be vectorised: the same width is reported, not failed.
    (result,) = check_case(Case("stepped_self", F32, 2048, 8), (90,))
    assert result.problems == []


@pytest.mark.parametrize("layout, widths", [
    # short rows: 2-D tiles of 8-element rows, 16-byte vectors (rows start aligned); rows of 4
    # against one value per row move flat (the flat kernel's masked last tile: *)
    ("rows_of_8", {"self": "128", "out": "128"}),
    ("rows_of_4", {"self": "128*", "out": "128*"}),
    ("sliced_rows_of_4", {"self": "128", "target": "128", "out": "128"}),
    # permuted operands: moved along their own unit stride (the masked last row tile: *)
    ("transposed_self", {"grad_output": "128", "self": "128*", "out": "128"}),
    ("transposed_out", {"self": "128", "out": "128*"}),
    ("channels_last_target", {"self": "128", "target": "128", "out": "128"}),
])
def test_two_d_tiles_use_16_byte_vectors(layout, widths):
    for result in check_case(Case(layout, F32, 1024, 8), (90,)):
        assert not result.problems, result.problems
        assert {name: result.widths[name] for name in widths} == widths


@pytest.mark.parametrize("layout, tile, target, other", [
    # target [N, 1] against [N, 8]: one [BLOCK_ROWS] vector per 2-D tile
    ("rows_of_8", (128, 8), "128", "128x8"),
    # against [N, 4] (moved flat): one [BLOCK / 4] vector per 1-D tile
    ("rows_of_4", (1, 1024), "256", "1024"),
])
def test_a_row_broadcast_operand_is_loaded_once_per_row(layout, tile, target, other):
    tensors, plan = cuda_check.plan_case(Case(layout, F32, 1024, 8))
    spec = triton_compat.specialise(plan.kernel, (*tensors, *plan.scalar_args), plan.constexprs,
                                    triton_compat.target("cuda", 90),
                                    cuda_check.GPU.launch_options(plan.config))
    ttir = triton_compat.compile(spec).asm["ttir"]
    assert plan.tile == tile
    loads = [line for line in ttir.splitlines() if "tt.load" in line]
    assert any(f"tensor<{target}x!tt.ptr<f32>" in line for line in loads)  # the target
    assert any(f"tensor<{other}x!tt.ptr<f32>" in line for line in loads)


def test_spills_fail(monkeypatch):
    monkeypatch.setattr(cuda_check, "ptxas_usage",
                        lambda ptx, arch: {"registers": 255, "spills": 64, "stack": 64})
    (result,) = check_case(Case("flat", F32, 2048, 8), (90,))
    assert result.problems == ["spills 64 B, stack 64 B"]
    assert "FAIL" in cuda_check.format_table([result])


def test_compile_failure_is_reported_not_raised(monkeypatch):
    def fail(spec):
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setattr(triton_compat, "compile", fail)
    (result,) = check_case(Case("flat", F32, 2048, 8), (90,))
    assert result.problems == ["does not compile"] and "PassManager" in result.error


def test_cases_cover_every_layout_and_candidate():
    quick, full = cuda_check.enumerate_cases(True), cuda_check.enumerate_cases(False)
    assert {c.layout for c in quick} == set(cuda_check.LAYOUTS)
    assert any(c.negated for c in quick) and len({c.dtypes for c in quick}) > 3
    # Every CUDA candidate; none over 8 elements per thread (those spill).
    assert {(c.block_size, c.num_warps) for c in full if c.layout == "flat"} == {
        (512, 4), (1024, 4), (512, 8), (1024, 8), (2048, 8)}
    assert len({c.dtypes for c in full}) == 81


def test_gate_passes_in_quick_mode():
    # The CI gate itself, as a user runs it.
    result = subprocess.run([sys.executable, "-m", "mse_grad_triton.tools.cuda_check", "--quick",
                             "--quiet"], capture_output=True, text=True, timeout=900,
                            env={**os.environ})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " 0 failed" in result.stdout
