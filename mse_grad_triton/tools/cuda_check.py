"""CUDA compile check: every kernel specialisation the launcher can pick, compiled by upstream
Triton for sm_80, sm_90a and sm_100a without a GPU (ptxas ships inside the wheel), and
inspected. The twin of ``ascend_check``, over the same layouts and dtype combinations.

    python -m mse_grad_triton.tools.cuda_check [--quick] [--archs 80,90,100] [--jobs N] [--quiet]

A specialisation is built exactly as Triton's JIT would build it for a real call (the launcher
plans the call on meta tensors; ``triton_compat.specialise`` binds and specialises it). For each
one and each architecture it reports:

- per operand (grad_output, self, target, out, negated_out) the width in bits of its widest
  global load or store, from the PTX (an access is attributed to the pointer parameter its
  address derives from): ``128`` is a 16-byte vector access, ``32`` a scalar fp32 one, ``-``
  none; ``*`` marks narrower accesses beside it (the flat kernel's masked last tile, whose
  length is not known at compile time, is element by element: one tile per call);
- registers, spill bytes and local memory (stack frame), from ``ptxas -v``;
- shared memory (Triton's metadata), layout conversions in the TTGIR that go through it, and
  ``bar.sync`` barriers in the PTX.

It fails on a compile error, on spills or local memory, and on a unit-stride operand whose
widest access is narrower than 64 bits where the tile allows 64 (every thread owns at least 8
contiguous bytes and every outer stride keeps them aligned). The other columns are reported.
"""

import argparse
import concurrent.futures
import dataclasses
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

from .. import backends, cli, configs, kernels, planning, triton_compat
from ..reduction import Reduction
from . import ascend_check
from .ascend_check import DTYPES, LAYOUTS, OPERANDS, LayoutCase

ARCHS = (80, 90, 100)           # sm_80, sm_90a, sm_100a (Triton adds the "a" from 90 on)
SM_COUNT = 132                  # grid size only; it does not change the compiled code
# Mixed dtype combinations checked beside the uniform ones (grad_output, self, target, out).
MIXED = (("f32", "bf16", "f16", "f32"), ("bf16", "f32", "bf16", "bf16"),
         ("f16", "f16", "f32", "f16"), ("f32", "f16", "f16", "bf16"))


@dataclasses.dataclass(frozen=True)
class Case(LayoutCase):
    """One CUDA specialisation."""

    num_warps: int = 4
    negated: bool = False              # also write the target's gradient (-out)
    reduction: int = Reduction.MEAN    # none too where the product's order differs


@dataclasses.dataclass
class Result:
    case: Case
    arch: int
    path: str = ""
    block_size: int = 0                # compiled tile size (less than the case's on short rows)
    error: str = ""
    widths: Dict[str, str] = dataclasses.field(default_factory=dict)  # operand -> bits or "-"
    registers: int = 0
    spill_bytes: int = 0
    stack_bytes: int = 0
    shared_bytes: int = 0
    conversions: int = 0               # ttg.convert_layout through shared memory
    barriers: int = 0                  # bar.sync in the PTX
    problems: List[str] = dataclasses.field(default_factory=list)


def default_config(layout_name: str, dtypes) -> configs.KernelConfig:
    """The config the launcher picks for this layout on a 132-SM GPU without a tuned table."""
    tensors, plan = plan_case(Case(layout_name, dtypes, 0, 0))
    return plan.config


def enumerate_cases(quick: bool) -> List[Case]:
    """Default: every layout x uniform dtypes x every CUDA candidate (tile size x warps), both
    gradients in one pass per layout, and every dtype combination (3**4) for the flat,
    scalar-grad and broadcast layouts at the default config. ``quick``: the default config
    only, and four mixed combinations instead of 81."""
    names = list(DTYPES)
    uniform = [(d, d, d, d) for d in names]
    combos = [(g, x, y, o) for g in names for x in names for y in names for o in names]
    cases = set()
    for layout_name in LAYOUTS:
        for dtypes in uniform:
            default = default_config(layout_name, dtypes)
            for reduction in ascend_check.reductions(layout_name, dtypes):
                cases.add(Case(layout_name, dtypes, default.block_size, default.num_warps,
                               reduction=reduction))
            cases.add(Case(layout_name, dtypes, default.block_size, default.num_warps, True))
            if not quick:
                for config in configs.candidate_configs("cuda"):
                    cases.add(Case(layout_name, dtypes, config.block_size, config.num_warps))
    for layout_name in ("flat", "flat_scalar_grad", "broadcast_target"):
        for dtypes in (MIXED if quick else combos):
            default = default_config(layout_name, dtypes)
            cases.add(Case(layout_name, dtypes, default.block_size, default.num_warps))
    return sorted(cases, key=lambda c: (list(LAYOUTS).index(c.layout), c.negated, c.dtypes,
                                        c.block_size, c.num_warps, c.reduction))


# A GPU as the launcher plans for it (its launch options included).
GPU = backends.DeviceBackend("cuda", "sm", SM_COUNT, True)


def plan_case(case: Case):
    """The case's five operands (meta tensors; the target's gradient last) and the launcher's
    plan for them on ``GPU`` (its default config where the case's block size is 0)."""
    tensors = LAYOUTS[case.layout][0](*(DTYPES[d] for d in case.dtypes))
    config = (configs.KernelConfig(block_size=case.block_size, num_warps=case.num_warps)
              if case.block_size else None)
    negated = tensors[3].new_empty(tensors[3].shape, dtype=tensors[2].dtype)
    plan = planning.plan_launch(*tensors, case.reduction, GPU, config,
                                negated if case.negated else None)
    return (*tensors, negated), plan


# --- reading the compiled kernel ---------------------------------------------------------

_PARAM = re.compile(r"ld\.param\.\w+\s+(%\w+), \[\w+_param_(\d+)\]")
_REGISTER = re.compile(r"%[a-z]+\d+")
_GLOBAL = re.compile(r"\b(ld|st)\.global((?:\.[\w:]+)*)\s+(.*)")
_ADDRESS = re.compile(r"\[\s*(%\w+)")
_WIDTH = re.compile(r"(?:\.v(\d))?\.[bfus](\d+)$")
_PTXAS = {"registers": re.compile(r"Used (\d+) registers"),
          "spills": re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads"),
          "stack": re.compile(r"(\d+) bytes stack frame")}


def access_widths(ptx: str, num_pointers: int) -> Dict[int, List[int]]:
    """Bits of every global load and store, per pointer parameter ``0..num_pointers-1``.

    An address register derives from a pointer parameter when it is computed (add, mad,
    mov, ...) from a register loaded from that parameter; data loaded from memory derives from
    nothing.
    """
    origin: Dict[str, set] = {}
    widths: Dict[int, List[int]] = {i: [] for i in range(num_pointers)}
    for line in ptx.splitlines():
        line = line.strip()
        if line.startswith("@"):
            line = line.split(None, 1)[1] if " " in line else ""
        if (param := _PARAM.search(line)) and int(param.group(2)) < num_pointers:
            origin[param.group(1)] = {int(param.group(2))}
            continue
        if access := _GLOBAL.match(line):
            qualifiers = access.group(2)
            width = _WIDTH.search(qualifiers)
            address = _ADDRESS.search(access.group(3))
            if width and address:
                bits = int(width.group(1) or 1) * int(width.group(2))
                for index in origin.get(address.group(1), ()):
                    widths[index].append(bits)
            continue
        registers = _REGISTER.findall(line)
        if len(registers) > 1:
            sources = set().union(*(origin.get(r, set()) for r in registers[1:]))
            if sources:
                origin[registers[0]] = sources
    return widths


def ptxas_usage(ptx: str, arch: int) -> Dict[str, int]:
    """Registers, spill bytes and stack bytes of a PTX module, from ``ptxas -v``."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kernel.ptx")
        with open(source, "w") as handle:
            handle.write(ptx)
        result = subprocess.run([get_ptxas(arch).path, "-v", "--gpu-name",
                                 sm_arch_from_capability(arch), source, "-o",
                                 os.path.join(folder, "kernel.cubin")],
                                capture_output=True, text=True, check=True)
    text = result.stderr + result.stdout
    spills = _PTXAS["spills"].search(text)
    return {"registers": int(_PTXAS["registers"].search(text).group(1)),
            "spills": int(spills.group(1)) + int(spills.group(2)),
            "stack": int(_PTXAS["stack"].search(text).group(1))}


def vector_allowed(plan, operand: int, itemsize: int, num_warps: int) -> bool:
    """Could this operand be accessed 64 bits at a time? Where its tile walks a unit-stride
    line (a flat tile; a 2-D tile's columns, or its rows when the operand is moved
    transposed): each thread owns at least 8 contiguous bytes of the tile, the line is at
    least 8 bytes long and fits whole in the layout at least once (else every tile is masked
    along it), the lines of a 2-D tile start aligned (``STRIDE_ALIGN``), and every outer
    stride (in elements) is a multiple of 16, so that Triton knows each thread's bytes stay
    aligned. Operands broadcast along a tile dimension (vectors, scalars) are not judged."""
    layout = plan.layout
    strides = layout.strides[min(operand, 3)]
    per_thread = plan.config.block_size // (32 * num_warps)
    if plan.moved_flat:  # (an input of one value per row, stride 0 here: not judged)
        return strides[0] == 1 and per_thread * itemsize >= 8
    block_rows, block_cols = plan.tile
    mode = plan.constexprs[ascend_check.MODE_OF[operand]]
    if mode == kernels.TILE.value:
        unit, line, extent, lines = strides[0] == 1, block_cols, layout.row_length, block_rows
    elif mode == kernels.TRANSPOSED.value:
        unit, line, extent, lines = True, block_rows, layout.tile_rows, block_cols
    else:
        return False
    aligned = lines == 1 or plan.constexprs["STRIDE_ALIGN"] * itemsize % 8 == 0
    return (unit and aligned and per_thread * itemsize >= 8 and line * itemsize >= 8
            and extent >= line and all(s % 16 == 0 for s in strides[2:]))


def _width_label(bits: List[int]) -> str:
    """The widest access (the bulk of the tiles), ``*`` when some are narrower (a masked
    last tile), ``-`` when there are none."""
    if not bits:
        return "-"
    return f"{max(bits)}{'*' if min(bits) < max(bits) else ''}"


def check_case(case: Case, archs: Sequence[int]) -> List[Result]:
    """Compile one specialisation for every architecture and inspect it."""
    tensors, plan = plan_case(case)
    itemsizes = [t.element_size() for t in tensors]
    expected = sum(planning.tile_operands(plan.layout, case.negated), ())
    results = []
    for arch in archs:
        result = Result(case, arch, plan.path, plan.config.block_size)
        results.append(result)
        try:
            spec = triton_compat.specialise(plan.kernel, (*tensors, *plan.scalar_args),
                                            plan.constexprs, triton_compat.target("cuda", arch),
                                            GPU.launch_options(plan.config))
            compiled = triton_compat.compile(spec)
            usage = ptxas_usage(compiled.asm["ptx"], arch)
        except Exception as error:  # a compile failure is a result, not a crash
            result.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:200]}"
            result.problems.append("does not compile")
            continue
        ptx, ttgir = compiled.asm["ptx"], compiled.asm["ttgir"]
        widths = access_widths(ptx, len(OPERANDS))
        result.widths = {name: _width_label(widths[i]) for i, name in enumerate(OPERANDS)}
        result.registers, result.spill_bytes = usage["registers"], usage["spills"]
        result.stack_bytes = usage["stack"]
        result.shared_bytes = compiled.metadata.shared
        result.conversions = (ttgir.count("ttg.convert_layout")
                              if compiled.metadata.shared else 0)
        result.barriers = len(re.findall(r"\bbar\.sync\b|\bbarrier\.sync\b", ptx))
        if result.spill_bytes or result.stack_bytes:
            result.problems.append(f"spills {result.spill_bytes} B, stack "
                                   f"{result.stack_bytes} B")
        for i in expected:
            name = OPERANDS[i]
            if not widths[i]:
                result.problems.append(f"{name} is never accessed")
            elif (max(widths[i]) < 64
                  and vector_allowed(plan, i, itemsizes[i], plan.config.num_warps)):
                result.problems.append(f"{name} accessed {max(widths[i])}-bit, 64+ possible")
    return results


def run(cases: Sequence[Case], archs: Sequence[int], jobs: int) -> List[Result]:
    """Check ``cases`` on ``jobs`` worker processes (forked: the kernels need no pickling)."""
    if jobs <= 1:
        return [r for case in cases for r in check_case(case, archs)]
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        return [r for results in pool.map(check_case, cases, [archs] * len(cases))
                for r in results]


def format_table(results: Sequence[Result]) -> str:
    header = (f"{'layout':<18} {'dtypes g/x/y/out':<17} {'block':>6} {'w':>2} {'sm':>4} "
              f"{'path':<16} {'bits g/x/y/o/n':<19} {'regs':>4} {'spill':>5} {'smem':>6} "
              f"{'cvt':>3} {'bar':>3}  verdict")
    lines = [header, "-" * len(header)]
    for r in results:
        c = r.case
        widths = "/".join(r.widths.get(name, "?") for name in OPERANDS) if r.widths else "-"
        status = ascend_check.verdict(r.problems, r.error)
        lines.append(
            f"{c.layout:<18} {'/'.join(c.dtypes):<17} {r.block_size:>6} {c.num_warps:>2} "
            f"{r.arch:>4} {r.path:<16} {widths:<19} {r.registers:>4} {r.spill_bytes:>5} "
            f"{r.shared_bytes:>6} {r.conversions:>3} {r.barriers:>3}  {status}")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="default configs only and four mixed dtype combinations")
    parser.add_argument("--archs", type=cli.choice_list(map(str, ARCHS)),
                        default=list(map(str, ARCHS)),
                        help="comma-separated compute capabilities (80, 90, 100)")
    parser.add_argument("--jobs", type=cli.positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary")
    args = parser.parse_args(argv)
    if triton_compat.FLAVOUR != "upstream":
        print("cuda-check needs upstream Triton (its NVIDIA backend); this environment has "
              f"{triton_compat.FLAVOUR} Triton {triton_compat.VERSION}", file=sys.stderr)
        return 2
    archs = tuple(int(a) for a in args.archs)
    cases = enumerate_cases(args.quick)
    started = time.time()
    results = run(cases, archs, args.jobs)
    shown = [r for r in results if r.problems] if args.quiet else results
    import triton
    from triton.backends.nvidia.compiler import sm_arch_from_capability

    print(f"CUDA compile check: {len(cases)} specialisations x "
          f"{', '.join(sm_arch_from_capability(a) for a in archs)} (Triton {triton.__version__};"
          " PTX and ptxas -v, no GPU)")
    print("bits: widest global access per operand grad_output/self/target/out/negated_out "
          "(128 = 16-byte vectors; * narrower ones too, e.g. a masked last tile; - not "
          "accessed); cvt: layout conversions through shared memory; bar: bar.sync in the PTX")
    if shown:
        print(format_table(shown))
    failed = sum(bool(r.problems) for r in results)
    print(f"{len(results) - failed} passed, {failed} failed ({time.time() - started:.0f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
