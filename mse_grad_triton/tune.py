"""Tune the kernel on the device present and write ``<output>/<device>.json``.

    python -m mse_grad_triton.tune [--dtypes float16,...] [--paths flat,...] [--sizes 2^16,...]
                                   [--output DIR] [--quick] [--timer auto|events|wall]
                                   [--model [--model-best N] [--model-target Ascend910B3]]
    (also installed as the ``mse-grad-triton-tune`` command)

For every dtype x launch path x size bucket it runs every candidate configuration
(``configs.candidate_configs``; on NPU those bishengir-compile plans cleanly: the others are
recorded as not runnable), checks each one's result against the float64 reference (a wrong or
failing candidate is recorded and never wins), times the rest on the device's clock (median,
warm-up excluded), and keeps the fastest. With ``--model`` the candidates are first ranked by
the Ascend pipe model of their compiled tile (``tools/pipe_model.py``: modelled, not
measured) and only the best few are measured. It also times the native
op (aclnnMseLossBackward through torch_npu; ATen on CUDA) on the device and end to end, and
records per dtype the size below which the native op is faster end to end: ``backend="auto"``
uses the native op below it.

Point the launcher at the result with ``MSE_GRAD_TRITON_TUNE_DIR=<output>``, or ship it in
``tune_configs/``. On the CPU the interpreter is timed: that exercises the machinery only.
"""

import argparse
import dataclasses
import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from tqdm import tqdm

from . import (
    autotune,
    backends,
    cli,
    configs,
    launcher,
    layout,
    planning,
    tables,
    triton_compat,
    validation,
)
from .reduction import Reduction
from .testing import MAX_ULP, make, max_ulp_error
from .timing import Timer, device_timer, host_timer, wall_time

DTYPES = {name: validation.DTYPES_BY_NAME[name] for name in tables.DTYPE_NAMES}
# The strided case: self [N / 1024, 1024] against target [N / 1024, 1]; the transposed case:
# against target [1024, N / 1024].t() (moved along its rows and turned on chip).
ROW_LENGTH = 1024
DEFAULT_SIZES = {"device": [2**k for k in range(12, 27, 2)], "cpu": [2**10, 2**12]}
QUICK_SIZES = {"device": [2**16, 2**20, 2**24], "cpu": [2**10]}


def make_inputs(path: str, dtype: torch.dtype, numel: int, device: torch.device):
    """Representative operands for a launch path, as autograd passes them (0-d grad_output
    for the scalar-grad and strided paths)."""
    rows = max(1, numel // ROW_LENGTH)
    if path == "flat":
        shapes = ([numel], [numel], [numel])
    elif path == "flat_scalar_grad":
        shapes = ([], [numel], [numel])
    elif path == "strided":
        shapes = ([], [rows, ROW_LENGTH], [rows, 1])
    elif path == "transposed":
        shapes = ([], [rows, ROW_LENGTH], [ROW_LENGTH, rows])
    else:
        raise ValueError(f"unknown path {path!r}; choose from {', '.join(tables.PATHS)}")
    grad, self, target = (make(shape, dtype, seed, device=device)
                          for seed, shape in enumerate(shapes))
    return grad, self, (target.t() if path == "transposed" else target)


def bytes_moved(grad, self, target, out) -> int:
    """Minimum traffic: every input read once (a one-element grad_output: once), out written."""
    return sum(t.numel() * t.element_size() for t in (grad, self, target, out))


def step(progress: tqdm, label: str) -> None:
    """Advance a progress bar by one, showing what was just done."""
    progress.set_postfix_str(label, refresh=False)
    progress.update()


@dataclasses.dataclass(frozen=True)
class ModelRanking:
    """``--model``: rank candidates by the pipe model for ``target``; measure the ``best``."""

    target: str = "Ascend910B3"
    best: int = 3


def tune(device: torch.device, dtypes: Sequence[str], paths: Sequence[str],
         sizes: Sequence[int], timer: Optional[Timer] = None,
         end_to_end: Optional[Timer] = None, show_progress: bool = True,
         ranking: Optional[ModelRanking] = None) -> dict:
    """Measure every candidate (or, with a ``ranking``, the best few by the model); return the
    table (see module docstring) as a dict."""
    backend = backends.backend_for(device)
    timer = timer or device_timer(device)
    end_to_end = end_to_end or host_timer(device)
    work = [(d, p, n) for d in dtypes for p in paths for n in sizes]
    per_entry = ranking.best + 1 if ranking else len(configs.candidate_configs(
        backend.kind, runnable_only=False)) * 2
    progress = tqdm(total=len(work) * (per_entry + 2), disable=not show_progress, unit="run",
                    dynamic_ncols=True)
    tables.ignore(backend.device_name)  # "default" means the built-in default while tuning
    entries = []
    for dtype_name, path, numel in work:
        entries.append(_tune_one(backend, device, dtype_name, path, numel, timer, end_to_end,
                                 progress, ranking))
    progress.close()
    return {
        "format": tables.FORMAT,
        "device": backend.device_name,
        "provenance": provenance(device, backend),
        "native_below": _native_below(entries),
        "entries": entries,
    }


def _tune_one(backend, device, dtype_name, path, numel, timer, end_to_end, progress,
              ranking: Optional[ModelRanking] = None) -> dict:
    """One table entry: every candidate measured (or why it failed or was not measured), the
    fastest, the native op on the device and end to end."""
    grad, self, target = make_inputs(path, DTYPES[dtype_name], numel, device)
    out = torch.empty(torch.broadcast_shapes(grad.shape, self.shape, target.shape),
                      dtype=self.dtype, device=device)
    operands = (grad, self, target, out)
    candidates, unrunnable = _candidates(operands, backend)
    modelled = _rank(operands, candidates, ranking) if ranking else {}
    label = f"{dtype_name} {path} {numel}"
    measured = []
    for rank, config in enumerate(candidates):
        record = None
        if ranking and rank > 0:  # the default (first) is always measured
            order = sorted(range(1, len(candidates)), key=lambda i: modelled[i][0])
            if order.index(rank) >= ranking.best:
                record = {"config": configs.table_fields(config),
                          "failed": f"not measured: ranked {order.index(rank) + 1} by the "
                                    f"model for {ranking.target}"}
        if record is None:
            step(progress, f"{label} block={config.block_size}")
            record = _measure(operands, backend, config, timer)
        if ranking:
            record["modelled_us"], reason = modelled[rank][0] * 1e6, modelled[rank][1]
            if reason:
                record["model"] = reason
        record["default"] = config is candidates[0]
        measured.append(record)
    measured += unrunnable
    passed = [r for r in measured if "seconds" in r]
    if not passed:
        raise RuntimeError(f"no candidate configuration works for {label}: "
                           f"{[r['failed'] for r in measured]}")
    best = min(passed, key=lambda r: r["seconds"])
    best_config = candidates[measured.index(best)]

    def native():
        return torch.ops.aten.mse_loss_backward(grad, self, target, Reduction.MEAN)

    step(progress, f"{label} native")
    native_seconds = timer(native)
    step(progress, f"{label} end to end")
    return {
        "dtype": dtype_name, "path": path, "numel": numel,
        "config": best["config"],
        "seconds": best["seconds"],
        "gbps": bytes_moved(*operands) / best["seconds"] / 1e9,
        "default_seconds": measured[0].get("seconds"),
        "native_seconds": native_seconds,
        "end_to_end_seconds": end_to_end(_launcher(operands, backend, best_config)),
        "native_end_to_end_seconds": end_to_end(native),
        "candidates": measured[1:],
    }


def _candidates(operands, backend, reduction: int = Reduction.MEAN
                ) -> Tuple[List[configs.KernelConfig], List[dict]]:
    """The default config first, then every runnable candidate as launched (a tile wider than
    the row is cut to the row, so some coincide: each is kept once); and a record of each
    candidate that is not runnable (on NPU: bishengir-compile does not plan it cleanly)."""
    rows = layout.of_tensors(operands)
    kind = (planning.tile_kind(rows, (*operands, None), reduction, chip=backend.chip)
            if backend.kind == "npu" else None)
    transposed = 0 if rows.flat else planning.transposed_operands(rows.tile_modes(), False)
    runnable = configs.candidate_configs(backend.kind, kind, transposed)
    unrunnable = [{"config": configs.table_fields(c),
                   "failed": "not runnable: bishengir-compile does not plan it cleanly "
                             f"(mse_grad_triton/ub_plan.json, {kind.key})"}
                  for c in configs.candidate_configs(backend.kind, kind, transposed,
                                                     runnable_only=False)
                  if c not in runnable]
    candidates = [planning.plan_launch(*operands, reduction, backend).config]
    for config in runnable:
        effective = planning.plan_launch(*operands, reduction, backend, config).config
        if all(configs.table_fields(effective) != configs.table_fields(c) for c in candidates):
            candidates.append(effective)
    return candidates, unrunnable


def _rank(operands, candidates, ranking: ModelRanking,
          reduction: int = Reduction.MEAN) -> Dict[int, Tuple[float, str]]:
    """Each candidate's modelled seconds on ``ranking.target`` (infinity, and why, where it
    does not model: not compiled cleanly, or no compiler)."""
    from .tools import ascend_check

    npu = ascend_check.npu_backend(ranking.target)
    five = (*operands, None)
    ranked = {}
    for index, config in enumerate(candidates):
        plan = planning.plan_launch(*operands, reduction, npu, config)
        modelled, reason = ascend_check.model_launch(five, plan, ranking.target)
        ranked[index] = (modelled.seconds, "") if modelled else (float("inf"), reason)
    return ranked


def _launcher(operands, backend, config, reduction: int = Reduction.MEAN
              ) -> Callable[[], object]:
    return lambda: launcher.launch(*operands, reduction, backend, config)


def _measure(operands, backend, config, timer, reduction: int = Reduction.MEAN) -> dict:
    """One candidate's record: its device seconds, or why it failed (a wrong result or an
    error: such a candidate can never win)."""
    grad, self, target, out = operands
    record = {"config": configs.table_fields(config)}
    try:
        out.fill_(float("nan"))
        _launcher(operands, backend, config, reduction)()
        worst = max_ulp_error(out, grad, self, target, reduction)
        if worst > MAX_ULP[out.dtype]:
            record["failed"] = f"wrong result: {worst:.3g} ULP"
        else:
            record["seconds"] = timer(_launcher(operands, backend, config, reduction))
    except Exception as error:  # a candidate that fails to compile or run is recorded
        record["failed"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return record


def _native_below(entries: Sequence[dict]) -> Dict[str, int]:
    """Per dtype: the smallest measured size from which the kernel is at least as fast as the
    native op end to end at every larger measured size, on every path (0: always the kernel;
    past the largest size: the native op at every measured size)."""
    result = {}
    for dtype in sorted({e["dtype"] for e in entries}):
        mine = [e for e in entries if e["dtype"] == dtype]
        sizes = sorted({e["numel"] for e in mine})
        threshold = sizes[-1] + 1
        for size in reversed(sizes):
            if all(e["end_to_end_seconds"] <= e["native_end_to_end_seconds"]
                   for e in mine if e["numel"] >= size):
                threshold = size
            else:
                break
        result[dtype] = 0 if threshold == sizes[0] else threshold
    return result


def provenance(device: torch.device, backend) -> dict:
    """Where and with what a table was measured: date, device kind and parallel units, timer,
    host and versions."""
    import triton

    versions = {"torch": torch.__version__, "triton": triton.__version__,
                "python": platform.python_version()}
    if device.type == "npu":
        import torch_npu
        versions["torch_npu"] = torch_npu.__version__
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "backend": backend.kind, "parallel_units": backend.num_units,
            "timer": "device events" if device.type != "cpu" else "wall clock (interpreter)",
            "host": platform.node(), **versions}


def write_table(table: dict, output: Path) -> Path:
    """Write ``<output>/<device>.json`` and forget cached tables so the next call reads it."""
    output.mkdir(parents=True, exist_ok=True)
    path = output / f"{table['device']}.json"
    path.write_text(json.dumps(table, indent=1) + "\n")
    tables.clear_cache()
    return path


def format_summary(table: dict) -> str:
    header = (f"{'dtype':<9} {'path':<17} {'numel':>10} {'best config':<24} {'time us':>9} "
              f"{'GB/s':>7} {'vs default':>10} {'vs native':>9} {'e2e us':>8} {'native e2e':>10}")
    lines = [header, "-" * len(header)]
    for e in table["entries"]:
        c = e["config"]
        knob = (f"mb={'y' if c['multibuffer'] else 'n'}" if table["provenance"]["backend"] == "npu"
                else f"warps={c['num_warps']}")
        best = f"{c['block_size']} x{c['programs_per_unit']} {knob}"
        vs_default = (f"{e['default_seconds'] / e['seconds']:.2f}x" if e["default_seconds"]
                      else "-")
        lines.append(
            f"{e['dtype']:<9} {e['path']:<17} {e['numel']:>10} {best:<24} "
            f"{e['seconds'] * 1e6:>9.1f} {e['gbps']:>7.1f} {vs_default:>10} "
            f"{e['native_seconds'] / e['seconds']:>8.2f}x {e['end_to_end_seconds'] * 1e6:>8.1f} "
            f"{e['native_end_to_end_seconds'] * 1e6:>10.1f}")
    lines.append("native op used below (elements, end to end): " + ", ".join(
        f"{d} {n}" for d, n in table["native_below"].items()))
    return "\n".join(lines)


def main(argv=None, timer: Optional[Timer] = None,
         end_to_end: Optional[Callable] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_device_argument(parser)
    parser.add_argument("--dtypes", type=cli.choice_list(DTYPES), default=list(DTYPES),
                        help=f"comma-separated of {', '.join(DTYPES)}")
    parser.add_argument("--paths", type=cli.choice_list(tables.PATHS),
                        default=list(tables.PATHS),
                        help=f"comma-separated of {', '.join(tables.PATHS)}")
    parser.add_argument("--sizes", type=cli.parse_sizes,
                        help="e.g. 2^16,2^20 or 65536,1048576")
    parser.add_argument("--quick", action="store_true", help="three sizes instead of eight")
    parser.add_argument("--output", type=Path, default=Path("tune_configs"),
                        help="folder for <device>.json (default: ./tune_configs)")
    parser.add_argument("--user-dir", action="store_true",
                        help="merge the results into the user table folder the launcher reads "
                             "($MSE_GRAD_TRITON_TUNE_DIR, else ~/.cache/mse_grad_triton/tuned, "
                             "as tuning on first use does) instead of --output")
    parser.add_argument("--timer", choices=("auto", "events", "wall"), default="auto",
                        help="device events (NPU/CUDA) or synchronised wall clock")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--model", action="store_true",
                        help="rank candidates by the Ascend pipe model of their compiled tile "
                             "(needs bishengir-compile) and measure only the best few")
    parser.add_argument("--model-best", type=cli.positive_int, default=ModelRanking.best,
                        help="how many candidates --model measures besides the default")
    parser.add_argument("--model-target", default=ModelRanking.target,
                        help="the Ascend target the model compiles for")
    args = parser.parse_args(argv)
    device = cli.device_from(args, parser)
    ranking = ModelRanking(args.model_target, args.model_best) if args.model else None
    if ranking:
        from .tools import bishengir, pipe_model

        if args.model_target not in pipe_model.MODELLED_CHIPS:
            parser.error(f"--model-target {args.model_target}: not a chip with published cost "
                         f"figures ({', '.join(pipe_model.MODELLED_CHIPS)})")
        if bishengir.find_compiler() is None or triton_compat.FLAVOUR != "ascend":
            parser.error("--model needs triton-ascend and bishengir-compile (CANN, or pip "
                         "install ascendnpu-ir==1.2.0 on x86_64)")
    kind = "cpu" if device.type == "cpu" else "device"
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)[kind]
    cli.check_sizes_fit(parser, "--sizes", sizes, device)
    if timer is None and args.timer == "wall":
        timer = lambda fn: wall_time(fn, device, warmup=2, repeat=10)  # noqa: E731
    if device.type == "cpu":
        print("CPU: timing Triton's interpreter exercises the tuner, not the kernel's speed; "
              "do not ship this table.")
    table = tune(device, args.dtypes, args.paths, sizes, timer,
                 end_to_end, show_progress=not args.no_progress and sys.stderr.isatty(),
                 ranking=ranking)
    print(format_summary(table))
    if args.user_dir:
        path = autotune.store(autotune.tuning_dir(), table["device"], table["entries"],
                              table["provenance"], table["native_below"])
        print(f"merged into {path}: the launcher reads it with MSE_GRAD_TRITON_TUNE_DIR="
              f"{path.parent} or MSE_GRAD_TRITON_AUTOTUNE=1")
        return 0
    path = write_table(table, args.output)
    print(f"wrote {path}; use it with MSE_GRAD_TRITON_TUNE_DIR={args.output.resolve()} "
          "or ship it in tune_configs/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
