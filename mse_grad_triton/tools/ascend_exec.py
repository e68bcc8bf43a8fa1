"""The compiled kernel, run: every launcher-default specialisation of the Ascend gate's layouts,
compiled by bishengir-compile to its UB-planned HIVM, executed on the CPU (``hivm_exec.py``;
the 950 series' vector functions through ``ave_exec.py``) and compared with float64 (the ULP
budgets) and with Triton's interpreter (bit for bit: the same specialisation, so the same
evaluation order). Each toolchain's specialisations are planned for one chip of it
(``TARGETS``): Ascend910B3 for A2/A3, Ascend910_9599 for the 950 series.

    python -m mse_grad_triton.tools.ascend_exec [--quick] [--toolchains a2_a3,910_95]
                                                [--jobs N] [--quiet]

Each case runs twice: at the gate's own shapes (the very specialisations the gate checks,
over the target's vector cores as programs; layouts of more than ``MAX_ELEMENTS`` elements
are left out, with the reason) and at a small shape of the same kind with a partial last
tile, over 3 programs. Both outputs (``self``'s gradient alone, and with the target's) and,
where it changes the evaluation order, ``none`` beside ``mean``. ``--quick``: the CI subset.
Where a tool is missing everything is skipped, saying which.
"""

import argparse
import collections
import concurrent.futures
import dataclasses
import functools
import multiprocessing
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .. import backends, chips, cli, configs, launcher, planning
from ..reduction import Reduction
from ..testing import MAX_ULP, make, make_like, max_ulp_error, storage_extent
from . import ascend_check, bishengir, hivm_exec

# The chip each toolchain's specialisations are compiled and planned for.
TARGETS = {"a2_a3": "Ascend910B3", "910_95": "Ascend910_9599"}
# Real tensors: layouts whose storage holds more elements than this are not run at the gate's
# shapes (> 2^31 elements: their small form runs the same code with 32-bit offsets).
MAX_ELEMENTS = 1 << 24
SMALL_PROGRAMS = 3
F32, F16, BF16 = torch.float32, torch.float16, torch.bfloat16
Tensors = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def _alternating(outer_dims: int, g, x, y) -> Tensors:
    shape = [3] * outer_dims + [33]
    target = [1 if (outer_dims - 1 - i) % 2 == 0 else 3 for i in range(outer_dims)] + [33]
    return make([], g, 0), make(shape, x, 1), make(target, y, 2)


# Small forms of the gate's layouts, with partial tiles (row lengths and counts that tiles do
# not divide): name -> builder from the three inputs' dtypes.
SMALL: Dict[str, Callable[..., Tensors]] = {
    "flat": lambda g, x, y: (make([5, 4999], g, 0), make([5, 4999], x, 1),
                             make([5, 4999], y, 2)),
    "flat_scalar_grad": lambda g, x, y: (make([], g, 0), make([5, 4999], x, 1),
                                         make([5, 4999], y, 2)),
    "flat_2^31+": lambda g, x, y: (make([], g, 0), make([24999], x, 1), make([24999], y, 2)),
    "broadcast_target": lambda g, x, y: (make([37, 300], g, 0), make([37, 300], x, 1),
                                         make([37, 1], y, 2)),
    "broadcast_self": lambda g, x, y: (make([], g, 0), make([1, 300], x, 1),
                                       make([37, 300], y, 2)),
    "short_rows": lambda g, x, y: (make([], g, 0), make([333, 30], x, 1), make([333, 1], y, 2)),
    "expanded_grad": lambda g, x, y: (make([4096], g, 0).expand(5, 4096), make([5, 4096], x, 1),
                                      make([5, 4096], y, 2)),
    "row_stride_2^31+": lambda g, x, y: (make([], g, 0), make([3, 1000], x, 1)[:, :700],
                                         make([3, 700], y, 2)),
    "rows_of_4": lambda g, x, y: (make([], g, 0), make([3001, 4], x, 1), make([3001, 1], y, 2)),
    "rows_of_2": lambda g, x, y: (make([3001, 1], g, 0), make([3001, 2], x, 1),
                                  make([3001, 1], y, 2)),
    "rows_of_8": lambda g, x, y: (make([], g, 0), make([3001, 8], x, 1), make([3001, 1], y, 2)),
    "sliced_rows_of_4": lambda g, x, y: (make([], g, 0), make([3001, 64], x, 1)[:, :4],
                                         make([3001, 4], y, 2)),
    "rows_of_3": lambda g, x, y: (make([32, 21, 3], g, 0), make([32, 21, 3], x, 1),
                                  make([32, 1, 3], y, 2)),
    "transposed_self": lambda g, x, y: (make([100, 130], g, 0), make([130, 100], x, 1).t(),
                                        make([100, 130], y, 2)),
    "transposed_out": lambda g, x, y: (make([], g, 0), make([100, 130], x, 1),
                                       make([100, 130], y, 2)),
    "channels_last_self": lambda g, x, y: (
        make([], g, 0), make([3, 20, 7, 9], x, 1).to(memory_format=torch.channels_last),
        make([3, 20, 7, 9], y, 2)),
    "channels_last_target": lambda g, x, y: (
        make([], g, 0), make([3, 20, 7, 9], x, 1),
        make([3, 20, 7, 9], y, 2).to(memory_format=torch.channels_last)),
    "wide_lanes": lambda g, x, y: (make([], g, 0), make([130, 100], x, 1).t(),
                                   make([100, 130], y, 2)),
    "stepped_self": lambda g, x, y: (make([], g, 0), make([50, 402], x, 1)[:, ::2],
                                     make([50, 201], y, 2)),
    **{f"outer_dims_{k}": functools.partial(_alternating, k) for k in range(2, 8)},
}
# The output of a small form: contiguous, except where the layout is about the output.
SMALL_OUT = {"transposed_out": lambda shape, dtype: torch.empty(shape[::-1], dtype=dtype).t()}


@dataclasses.dataclass
class Run:
    """One specialisation run in its compiled form."""

    case: ascend_check.Case
    shape: str                       # "gate" or "small"
    programs: int = 0
    tile: Tuple[int, int] = (0, 0)
    worst_ulp: float = 0.0
    bitwise: Optional[bool] = None   # against the interpreter
    skipped: str = ""
    problem: str = ""
    seconds: float = 0.0


def cases(quick: bool, toolchain: str = "a2_a3") -> List[ascend_check.Case]:
    """The launcher's defaults per layout, uniform dtype, output count and reduction order:
    every tile it uses (its largest, and the smaller ones it shrinks to for small tensors),
    and every dtype combination of the flat layout at its largest tile; ``quick``: the
    largest tile of fp32 and bf16 for a set of layouts that covers every HIVM op (and every
    register op of the 950's)."""
    names = ["f32", "bf16"] if quick else list(ascend_check.DTYPES)
    layouts = (("flat", "flat_scalar_grad", "broadcast_target", "rows_of_4", "rows_of_3",
                "transposed_self", "transposed_out", "stepped_self", "outer_dims_3") if quick
               else ascend_check.LAYOUTS)
    found = []
    for name in layouts:
        for dtype in names:
            dtypes = (dtype,) * 4
            for reduction in ascend_check.reductions(name, dtypes):
                for negated in ((False,) if quick else (False, True)):
                    tiles = ascend_check.launcher_cases(name, dtypes, negated, reduction,
                                                        toolchain)
                    found += tiles[:1] if quick else tiles
    if not quick:
        combos = [(g, x, y, o) for g in names for x in names for y in names for o in names]
        for dtypes in combos:
            for reduction in ascend_check.reductions("flat", dtypes):
                found.append(ascend_check.launcher_cases("flat", dtypes, False, reduction,
                                                         toolchain)[0])
    return list(dict.fromkeys(found))


def _operands(case, shape: str) -> Tuple[Optional[tuple], str]:
    """Real operands (grad, self, target, out, negated_out or None) for the case's layout at
    the gate's shape or the small one; or None and why not."""
    dtypes = [ascend_check.DTYPES[d] for d in case.dtypes]
    if shape == "gate":
        metas = ascend_check.LAYOUTS[case.layout][0](*dtypes)
        largest = max(storage_extent(t) for t in metas)
        if largest > MAX_ELEMENTS:
            return None, f"{largest} elements of storage > {MAX_ELEMENTS}: its small form runs"
        inputs = tuple(make_like(t, seed) for seed, t in enumerate(metas[:3]))
        out = make_like(metas[3], 3)
    else:
        inputs = SMALL[case.layout](*dtypes[:3])
        result_shape = torch.broadcast_shapes(*(t.shape for t in inputs))
        out = SMALL_OUT.get(case.layout, lambda s, d: torch.empty(s, dtype=d))(
            tuple(result_shape), dtypes[3])
    negated = torch.empty_strided(out.shape, out.stride(), dtype=dtypes[2]) \
        if case.negated else None
    return (*inputs, out, negated), ""


def run_case(case: ascend_check.Case, shape: str, compiler: bishengir.Compiler,
             cache: Optional[Path], misplace: bool = False) -> Run:
    """Compile the case's specialisation for the shape's operands, run it in its planned HIVM
    form, and compare; ``misplace``: the negative control (one planned buffer moved onto
    another live one)."""
    started = time.time()
    result = Run(case, shape)
    operands, why = _operands(case, shape)
    if operands is None:
        result.skipped = why
        return result
    grad, self_, target, out, negated = operands
    chip = chips.chip(TARGETS[case.toolchain])
    units = chip.vector_cores if shape == "gate" else SMALL_PROGRAMS
    npu = backends.DeviceBackend("npu", chip.name, units, False)
    config = configs.KernelConfig(block_size=case.block_size, multibuffer=case.multibuffer,
                                  transpose=case.transpose)
    plan = planning.plan_launch(grad, self_, target, out, case.reduction, npu, config, negated)
    result.programs, result.tile = plan.num_programs, plan.tile
    pointers = (grad, self_, target, out, negated if negated is not None else out)
    spec = ascend_check.specialise(plan.kernel, (*pointers, *plan.scalar_args), plan.constexprs,
                                   chip.name)
    linalg = ascend_check.to_linalg(spec, *ascend_check.to_ttir(spec))
    planned = bishengir.planned_hivm(linalg, chip.name, case.multibuffer, compiler, cache)
    offsets = hivm_exec.planned_offsets(planned)
    moved = (offsets[1], offsets[0]) if misplace and len(offsets) > 1 else None
    mlir, entry = hivm_exec.translate(planned, chip.ub_bytes, moved)
    library = hivm_exec.build(mlir, cache / "hivm-exec" if cache else None)
    arguments = [(spec.source.signature[p.name], value)
                 for p, value in zip(plan.kernel.params, (*pointers, *plan.scalar_args))
                 if not p.is_constexpr and p.name in spec.source.signature
                 and p.name not in spec.source.constants]
    for tensor in (out, negated):
        if tensor is not None:
            tensor.fill_(float("nan"))
    hivm_exec.execute(library, entry, arguments, plan.num_programs, chip.ub_bytes)
    result.worst_ulp = max(max_ulp_error(out, grad, self_, target, case.reduction),
                           max_ulp_error(negated.neg(), grad, self_, target, case.reduction)
                           if negated is not None else 0.0)
    if shape == "small":  # the interpreter is too slow for the gate's shapes
        interpreted = _interpreted(operands, case, plan.config)
        result.bitwise = all(torch.equal(_bits(a), _bits(b))
                             for a, b in zip((out, negated), interpreted) if a is not None)
    budget = MAX_ULP[out.dtype]
    if not result.worst_ulp <= budget:
        result.problem = f"{result.worst_ulp:.3g} ULP > {budget}"
    elif result.bitwise is False:
        result.problem = "differs from the interpreter's bits"
    result.seconds = time.time() - started
    return result


def _interpreted(operands, case, config) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    grad, self_, target, out, negated = operands
    mine = torch.empty_strided(out.shape, out.stride(), dtype=out.dtype)
    theirs = None if negated is None else torch.empty_strided(out.shape, out.stride(),
                                                              dtype=negated.dtype)
    cpu = backends.backend_for(torch.device("cpu"))
    launcher.launch(grad, self_, target, mine, case.reduction, cpu, config, theirs)
    return mine, theirs


def _bits(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}
                                    [tensor.element_size()])


def _check(work) -> List[Run]:
    compilers, cache, items = work
    runs = []
    for case, shape in items:
        try:
            runs.append(run_case(case, shape, compilers[case.toolchain], cache))
        except Exception as error:  # a failure is a result, not a crash
            runs.append(Run(case, shape, problem=f"{type(error).__name__}: "
                                                 f"{str(error).splitlines()[0][:300]}"))
    return runs


def run(selected: Sequence[ascend_check.Case], compilers: Dict[str, bishengir.Compiler],
        jobs: int,
        cache: Optional[Path]) -> List[Run]:
    """Every case at both shapes, on ``jobs`` forked workers."""
    items = [(case, shape) for case in selected for shape in ("gate", "small")]
    if jobs <= 1:
        return _check((compilers, cache, items))
    chunks = [items[i::jobs] for i in range(jobs)]
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        return [r for runs in pool.map(_check, [(compilers, cache, c) for c in chunks])
                for r in runs]


_BITS = {True: "same", False: "DIFF", None: "-"}


def format_table(runs: Sequence[Run]) -> str:
    header = (f"{'target':<14} {'layout':<20} {'dtype':<5} {'red.':<4} {'neg':>3} {'shape':<5} "
              f"{'tile':>9} "
              f"{'progs':>5} {'ULP':>5} {'bits':>5}  verdict")
    lines = [header, "-" * len(header)]
    for r in runs:
        c = r.case
        verdict = (f"skipped: {r.skipped}" if r.skipped else
                   f"FAIL: {r.problem}" if r.problem else "ok")
        lines.append(f"{TARGETS[c.toolchain]:<14} {c.layout:<20} {c.dtypes[1]:<5} "
                     f"{Reduction(c.reduction).name.lower():<4} {'y' if c.negated else 'n':>3} "
                     f"{r.shape:<5} {f'{r.tile[0]}x{r.tile[1]}':>9} {r.programs:>5} "
                     f"{r.worst_ulp:>5.2f} {_BITS[r.bitwise]:>5}  {verdict}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI subset")
    parser.add_argument("--toolchains", type=cli.choice_list(tuple(TARGETS)),
                        default=list(TARGETS),
                        help=f"comma-separated: {', '.join(TARGETS)} (default: both)")
    parser.add_argument("--jobs", type=cli.positive_int, default=os.cpu_count() or 1)
    parser.add_argument("--quiet", action="store_true", help="print failures and the summary")
    args = parser.parse_args(argv)
    missing = hivm_exec.missing_tools()
    if missing:
        print(f"Ascend execution check SKIPPED: {', '.join(missing)} not found (apt-get install "
              f"{' '.join(hivm_exec.PACKAGES)})")
        return 0
    compilers, selected = {}, []
    for toolchain in args.toolchains:
        compiler = bishengir.find_compiler(toolchain)
        name = chips.TOOLCHAINS[toolchain].compiler
        if compiler is None:
            print(f"{toolchain}: SKIPPED: no {name} (pip install ascendnpu-ir==1.2.0 on x86_64)")
            continue
        compilers[toolchain] = compiler
        selected += cases(args.quick, toolchain)
        print(f"{toolchain}: {TARGETS[toolchain]}, {name} {compiler.version}")
    if not compilers:
        return 0
    print("Ascend execution check: the UB-planned HIVM run on the CPU (sync not checked: "
          "sequential)")
    started = time.time()
    runs = run(selected, compilers, args.jobs, ascend_check.cache_root())
    shown = [r for r in runs if r.problem] if args.quiet else runs
    if shown:
        print(format_table(shown))
    counts = collections.Counter("failed" if r.problem else "skipped" if r.skipped else "passed"
                                 for r in runs)
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
          f"({time.time() - started:.0f} s)")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
