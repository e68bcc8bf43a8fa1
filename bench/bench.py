"""Benchmark: this kernel against the native op, on the device present.

    python bench/bench.py [--quick] [--output DIR] [--dtypes ...] [--cases ...]
                          [--providers triton,auto,native,compile] [--max-size 2^28]

Sweeps sizes (2^10 .. 2^28 elements, capped by free device memory) x dtypes x cases:
``none`` (full grad_output), ``mean`` (0-d grad_output, as autograd passes), ``broadcast``
(target [N/1024, 1] against self [N/1024, 1024]) and ``transposed`` (self a transposed view).
Providers: this kernel (``backend="triton"``), ``backend="auto"``, the native op
(aclnnMseLossBackward through torch_npu on NPU, ATen elsewhere), and ``torch.compile`` of the
eager formula where it compiles. Every provider's result is checked against a float64
reference first; a wrong one is reported as wrong and not timed.

Per row: device time (device events around one call, L2 flushed, warm-up excluded; median and
10th-90th percentile), end-to-end host time per call (synchronised wall clock over many
calls), GB/s from the bytes the op must move, % of this device's copy bandwidth (measured in
the same run), % of the nominal peak, and speed-up over the native op. Also the host path
(``host_path.py``): a training step against stock PyTorch, and on a machine without a GPU the
launch path through upstream Triton's real dispatch with the driver stubbed.

Writes results.json, results.csv, gbps.png and speedup.png to --output (default
bench/results/<device>) and prints a table. With --quick on a CPU-only machine the kernel runs
in Triton's interpreter: its timings are not kernel performance.
"""

import argparse
import csv
import dataclasses
import datetime
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional

import host_path
import torch
from tqdm import tqdm

from mse_grad_triton import backends, cli, launcher, mse_loss_backward, triton_compat
from mse_grad_triton.reduction import Reduction, gradient_scale
from mse_grad_triton.testing import max_ulp_error
from mse_grad_triton.timing import device_sampler, host_timer, synchronize
from mse_grad_triton.tools import pipe_model
from mse_grad_triton.tune import DTYPES, bytes_moved, step

CASES = {"none": Reduction.NONE, "mean": Reduction.MEAN, "broadcast": Reduction.MEAN,
         "transposed": Reduction.MEAN}  # case -> reduction
PROVIDERS = ("triton", "auto", "native", "compile")
ROW = 1024  # columns of the 2-D cases
# A result further than this from the float64 reference is wrong (the kernel's own budget,
# 1 ULP fp16/bf16 and 4 ULP fp32, is enforced by the tests and ./run check; the native op
# rounds more than once).
WRONG_BEYOND_ULP = {torch.float32: 8, torch.float16: 4, torch.bfloat16: 4}
# Nominal HBM bandwidth by device name (first match wins), with where the figure comes from.
NOMINAL_PEAK = [
    ("Ascend910B4", 800, "REFERENCE.md section 5; unverified"),
    ("Ascend910B", 1600, "REFERENCE.md section 5; unverified"),
    ("Ascend910_93", 1600, "per die; REFERENCE.md section 5; unverified"),
    ("H100_PCIe", 2000, "NVIDIA H100 PCIe datasheet"),
    ("H100", 3350, "NVIDIA H100 SXM5 datasheet"),
    ("H200", 4800, "NVIDIA H200 datasheet"),
]


def make_case(case: str, dtype: torch.dtype, numel: int, device: torch.device):
    """(grad_output, self, target) for a case, built on the device."""
    generator = torch.Generator().manual_seed(numel)

    def values(*shape):
        return (torch.rand(shape, generator=generator) * 8 - 4).to(device=device, dtype=dtype)

    rows = max(1, numel // ROW)
    if case == "none":
        return values(numel), values(numel), values(numel)
    if case == "mean":
        return values(), values(numel), values(numel)
    if case == "broadcast":
        return values(), values(rows, ROW), values(rows, 1)
    if case == "transposed":
        return values(), values(ROW, rows).t(), values(rows, ROW)
    raise ValueError(f"unknown case {case!r}")


def providers(device: torch.device, names: List[str]) -> Dict[str, Callable]:
    """name -> fn(grad, self, target, reduction); ``compile`` only where requested."""
    table = {
        "triton": lambda g, x, y, r: mse_loss_backward(g, x, y, r, backend="triton"),
        "auto": lambda g, x, y, r: mse_loss_backward(g, x, y, r, backend="auto"),
        "native": lambda g, x, y, r: torch.ops.aten.mse_loss_backward(g, x, y, r),
    }
    if "compile" in names:
        def eager(g, x, y, scale):
            return g * (x - y) * scale
        compiled = torch.compile(eager, dynamic=False)
        table["compile"] = lambda g, x, y, r: compiled(
            g, x, y, gradient_scale(r, x.numel()))
    return {name: table[name] for name in names if name in table}


@dataclasses.dataclass
class Row:
    case: str
    dtype: str
    numel: int
    provider: str
    correct: bool
    max_ulp: float
    device_us: Optional[float] = None
    device_us_p10: Optional[float] = None
    device_us_p90: Optional[float] = None
    end_to_end_us: Optional[float] = None
    gbps: Optional[float] = None
    pct_of_copy: Optional[float] = None
    pct_of_peak: Optional[float] = None
    speedup_vs_native: Optional[float] = None
    note: str = ""
    # Modelled for an Ascend target from the kernel's compiled HIVM, on a machine without an
    # NPU (bishengir-compile + tools/pipe_model.py): NOT measured.
    modelled_target: Optional[str] = None
    modelled_us: Optional[float] = None
    modelled_gbps: Optional[float] = None
    modelled_roofline_pct: Optional[float] = None
    modelled_bottleneck: Optional[str] = None
    aclnn_modelled_us: Optional[float] = None
    modelled_speedup_vs_aclnn: Optional[float] = None
    model_note: str = ""


def measure_copy_bandwidth(device: torch.device, nbytes: int) -> float:
    """GB/s of a device-to-device copy (bytes read + written) on this device."""
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    seconds = statistics.median(device_sampler(device, warmup=3, repeat=10)(
        lambda: dst.copy_(src)))
    return 2 * nbytes / seconds / 1e9


def nominal_peak(device_name: str) -> Optional[dict]:
    for key, gbps, source in NOMINAL_PEAK:
        if key in device_name:
            return {"gbps": gbps, "source": source}
    return None


def run(device, dtypes, cases, sizes, provider_names, quick, show_progress) -> dict:
    backend = backends.backend_for(device)
    fns = providers(device, provider_names)
    sampler = device_sampler(device, warmup=1 if quick else 5, repeat=3 if quick else 25)
    end_to_end = host_timer(device, calls=3 if device.type == "cpu" else 100,
                            repeat=1 if quick else 3)
    copy_gbps = measure_copy_bandwidth(device, (64 if device.type == "cpu" else 256) << 20)
    peak = nominal_peak(backend.device_name)
    progress = tqdm(total=len(dtypes) * len(cases) * len(sizes) * len(fns),
                    disable=not show_progress, unit="run", dynamic_ncols=True)
    rows: List[Row] = []
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        for case in cases:
            reduction = CASES[case]
            for numel in sizes:
                grad, self, target = make_case(case, dtype, numel, device)
                group = []
                for name, fn in fns.items():
                    step(progress, f"{dtype_name} {case} {numel} {name}")
                    group.append(_measure(name, fn, grad, self, target, reduction, case,
                                          dtype_name, numel, sampler, end_to_end, copy_gbps,
                                          peak))
                native = next((r for r in group if r.provider == "native" and r.device_us), None)
                for row in group:
                    if native and row.device_us:
                        row.speedup_vs_native = native.device_us / row.device_us
                rows.extend(group)
    progress.close()
    return {"copy_gbps": copy_gbps, "nominal_peak": peak, "rows": rows}


def _measure(name, fn, grad, self, target, reduction, case, dtype_name, numel, sampler,
             end_to_end, copy_gbps, peak) -> Row:
    try:
        result = fn(grad, self, target, reduction)
        synchronize(self.device)
    except Exception as error:  # e.g. torch.compile without a working backend
        return Row(case, dtype_name, numel, name, False, float("nan"),
                   note=f"did not run: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
    ulp = max_ulp_error(result, grad, self, target, reduction)
    row = Row(case, dtype_name, numel, name, ulp <= WRONG_BEYOND_ULP[self.dtype], ulp)
    if not row.correct:
        row.note = "wrong result: not timed"
        return row
    samples = sampler(lambda: fn(grad, self, target, reduction))
    deciles = statistics.quantiles(samples, n=10, method="inclusive")
    row.device_us = statistics.median(samples) * 1e6
    row.device_us_p10, row.device_us_p90 = deciles[0] * 1e6, deciles[-1] * 1e6
    row.end_to_end_us = end_to_end(lambda: fn(grad, self, target, reduction)) * 1e6
    row.gbps = bytes_moved(grad, self, target, result) / (row.device_us * 1e-6) / 1e9
    row.pct_of_copy = 100 * row.gbps / copy_gbps
    if peak:
        row.pct_of_peak = 100 * row.gbps / peak["gbps"]
    return row


# --- modelled for Ascend ---------------------------------------------------------------

def add_modelled(rows: List[Row], device: torch.device) -> str:
    """On a machine without an NPU: each kernel row's Ascend figures, modelled from its
    compiled HIVM for ``ascend_check.MODEL_TARGETS[0]``, and aclnn's V2 kernel on the same
    model. What was done, or why not."""
    if device.type == "npu":
        return "on an NPU: measured, not modelled"
    if triton_compat.FLAVOUR != "ascend":
        return f"not modelled: needs triton-ascend ({triton_compat.FLAVOUR} Triton here)"
    from mse_grad_triton.tools import ascend_check, bishengir

    if bishengir.find_compiler() is None:
        return "not modelled: no bishengir-compile (CANN, or pip install ascendnpu-ir==1.2.0)"
    target = ascend_check.MODEL_TARGETS[0]
    npu = ascend_check.npu_backend(target)
    meta = torch.device("meta")
    for row in rows:
        if row.provider != "triton":
            continue
        grad, self, target_t = make_case(row.case, DTYPES[row.dtype], row.numel, meta)
        out = torch.empty(torch.broadcast_shapes(grad.shape, self.shape, target_t.shape),
                          dtype=self.dtype, device=meta)
        plan = launcher.plan_call(grad, self, target_t, out, CASES[row.case], npu)
        modelled, reason = ascend_check.model_launch((grad, self, target_t, out, None), plan,
                                                     target)
        aclnn = ascend_check.model_aclnn((grad, self, target_t, out), npu.num_units)
        row.modelled_target, row.aclnn_modelled_us = target, aclnn.us
        row.model_note = f"{pipe_model.LABEL}; aclnn as {aclnn.label.split(',')[0]}"
        if modelled is None:
            row.model_note = f"not modelled: {reason}"
            continue
        row.modelled_us, row.modelled_gbps = modelled.us, modelled.gbps
        row.modelled_roofline_pct = 100 * modelled.roofline_fraction
        row.modelled_bottleneck = modelled.bottleneck
        row.modelled_speedup_vs_aclnn = aclnn.seconds / modelled.seconds
    return f"modelled for {target} from the compiled HIVM - not measured ({pipe_model.SOURCE})"


def format_modelled(rows: List[Row], note: str) -> str:
    modelled = [r for r in rows if r.modelled_target]
    if not modelled:
        return note
    header = (f"{'case':<10} {'dtype':<8} {'numel':>10} {'model us':>9} {'GB/s':>7} "
              f"{'roof%':>6} {'bound':>5} {'aclnn us':>9} {'x aclnn':>8}  aclnn as")
    lines = [note, header, "-" * len(header)]
    for r in modelled:
        if r.modelled_us is None:
            lines.append(f"{r.case:<10} {r.dtype:<8} {r.numel:>10}  {r.model_note}")
            continue
        lines.append(f"{r.case:<10} {r.dtype:<8} {r.numel:>10} {r.modelled_us:>9.2f} "
                     f"{r.modelled_gbps:>7.0f} {r.modelled_roofline_pct:>6.0f} "
                     f"{r.modelled_bottleneck:>5} {r.aclnn_modelled_us:>9.2f} "
                     f"{r.modelled_speedup_vs_aclnn:>7.2f}x  "
                     f"{r.model_note.split('aclnn as ')[-1]}")
    return "\n".join(lines)


# --- output -------------------------------------------------------------------------------

def format_table(rows: List[Row]) -> str:
    def num(value, fmt):
        return "-" if value is None else format(value, fmt)

    header = (f"{'case':<10} {'dtype':<8} {'numel':>10} {'provider':<8} {'ok':<5} {'ULP':>5} "
              f"{'device us':>10} {'p10-p90 us':>17} {'e2e us':>9} {'GB/s':>8} {'%copy':>6} "
              f"{'%peak':>6} {'x native':>8}")
    lines = [header, "-" * len(header)]
    for r in rows:
        spread = (f"{r.device_us_p10:.1f}-{r.device_us_p90:.1f}" if r.device_us is not None
                  else "-")
        lines.append(
            f"{r.case:<10} {r.dtype:<8} {r.numel:>10} {r.provider:<8} "
            f"{'yes' if r.correct else 'NO':<5} {num(r.max_ulp, '.3g'):>5} "
            f"{num(r.device_us, '.1f'):>10} {spread:>17} {num(r.end_to_end_us, '.1f'):>9} "
            f"{num(r.gbps, '.2f'):>8} {num(r.pct_of_copy, '.1f'):>6} "
            f"{num(r.pct_of_peak, '.1f'):>6} {num(r.speedup_vs_native, '.2f'):>8}"
            + (f"  {r.note}" if r.note else ""))
    return "\n".join(lines)


def write_outputs(output: Path, meta: dict, result: dict) -> List[Path]:
    output.mkdir(parents=True, exist_ok=True)
    rows = [dataclasses.asdict(r) for r in result["rows"]]
    document = {**meta, "copy_bandwidth_gbps": result["copy_gbps"],
                "nominal_peak": result["nominal_peak"], "rows": rows}
    paths = [output / "results.json", output / "results.csv", output / "gbps.png",
             output / "speedup.png"]
    if any(r["modelled_us"] is not None for r in rows):
        paths.append(output / "modelled.png")
    paths[0].write_text(json.dumps(document, indent=1) + "\n")
    with paths[1].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["device", "date", *rows[0].keys()])
        writer.writeheader()
        for row in rows:
            writer.writerow({"device": meta["device"], "date": meta["date"], **row})
    _plot(paths[2], paths[3], meta, result)
    if len(paths) > 4:
        _plot_modelled(paths[4], meta, result)
    return paths


def _plot(gbps_path: Path, speedup_path: Path, meta: dict, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    cases = list(dict.fromkeys(r.case for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    title = f"{meta['device']} ({meta['date'][:10]})" + ("  [CPU interpreter: not kernel " \
        "performance]" if meta["interpreter"] else "")
    for path, metric, reference_line in ((gbps_path, "gbps", result["copy_gbps"]),
                                         (speedup_path, "speedup_vs_native", 1.0)):
        figure, axes = plt.subplots(len(cases), len(dtypes), squeeze=False,
                                    figsize=(4.5 * len(dtypes), 3.2 * len(cases)))
        for i, case in enumerate(cases):
            for j, dtype in enumerate(dtypes):
                ax = axes[i][j]
                for provider in dict.fromkeys(r.provider for r in rows):
                    if metric == "speedup_vs_native" and provider == "native":
                        continue
                    points = [(r.numel, getattr(r, metric)) for r in rows
                              if (r.case, r.dtype, r.provider) == (case, dtype, provider)
                              and getattr(r, metric) is not None]
                    if points:
                        ax.plot(*zip(*points), marker="o", label=provider)
                ax.axhline(reference_line, color="gray", linestyle="--",
                           label="device copy" if metric == "gbps" else "native")
                ax.set_xscale("log", base=2)
                ax.set_title(f"{case}, {dtype}", fontsize=9)
                ax.set_xlabel("elements")
                ax.set_ylabel("GB/s" if metric == "gbps" else "speed-up over native")
                ax.legend(fontsize=7)
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        figure.savefig(path, dpi=80)
        plt.close(figure)


def _plot_modelled(path: Path, meta: dict, result: dict) -> None:
    """The modelled Ascend device time of the kernel and of aclnn, per case and dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.modelled_us is not None]
    cases = list(dict.fromkeys(r.case for r in rows))
    dtypes = list(dict.fromkeys(r.dtype for r in rows))
    figure, axes = plt.subplots(len(cases), len(dtypes), squeeze=False,
                                figsize=(4.5 * len(dtypes), 3.2 * len(cases)))
    for i, case in enumerate(cases):
        for j, dtype in enumerate(dtypes):
            ax = axes[i][j]
            mine = [r for r in rows if (r.case, r.dtype) == (case, dtype)]
            ax.plot([r.numel for r in mine], [r.modelled_us for r in mine], marker="o",
                    label="this kernel (modelled)")
            ax.plot([r.numel for r in mine], [r.aclnn_modelled_us for r in mine], marker="s",
                    label="aclnn (modelled)")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{case}, {dtype}", fontsize=9)
            ax.set_xlabel("elements")
            ax.set_ylabel("us")
            ax.legend(fontsize=7)
    figure.suptitle(f"{meta['modelled']} ({meta['date'][:10]})", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _sizes(args, device) -> List[int]:
    """The sweep's sizes: as asked, or by device (the interpreter gets small ones), within
    --max-size and a tenth of free device memory."""
    interpreter = device.type == "cpu"
    if args.sizes:
        sizes = args.sizes
    elif interpreter:
        sizes = [2**10, 2**12] if args.quick else [2**10, 2**12, 2**14]
    else:
        sizes = [2**k for k in (range(12, 25, 4) if args.quick else range(10, 29, 2))]
    free = cli.free_bytes(device) if not interpreter else 8 << 30
    return [n for n in sizes if n <= args.max_size and cli.BYTES_PER_ELEMENT * n < free]


def _metadata(device, backend) -> dict:
    """What the results were measured on: device, versions, date."""
    import triton

    meta = {
        "device": backend.device_name, "backend": backend.kind,
        "parallel_units": backend.num_units, "interpreter": device.type == "cpu",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": {"torch": torch.__version__, "triton": triton.__version__,
                     "python": platform.python_version()},
        "byte_count": "sum over grad_output, self, target and out of numel x element size",
    }
    if device.type == "npu":
        import torch_npu
        meta["versions"]["torch_npu"] = torch_npu.__version__
    return meta


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_device_argument(parser)
    parser.add_argument("--quick", action="store_true",
                        help="few sizes; on a CPU-only machine, the interpreter end to end")
    parser.add_argument("--dtypes", type=cli.choice_list(DTYPES), default=list(DTYPES),
                        help=f"comma-separated of {', '.join(DTYPES)}")
    parser.add_argument("--cases", type=cli.choice_list(CASES), default=list(CASES),
                        help=f"comma-separated of {', '.join(CASES)}")
    parser.add_argument("--providers", type=cli.choice_list(PROVIDERS), default=None,
                        help=f"comma-separated of {', '.join(PROVIDERS)} (default: all; "
                             "no compile on the CPU)")
    parser.add_argument("--sizes", type=cli.parse_sizes,
                        help="e.g. 2^10,2^20 (overrides the sweep)")
    parser.add_argument("--max-size", type=cli.parse_size, default=2**28)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    device = cli.device_from(args, parser)
    backend = backends.backend_for(device)
    interpreter = device.type == "cpu"
    if args.sizes:
        cli.check_sizes_fit(parser, "--sizes", args.sizes, device)
    sizes = _sizes(args, device)
    names = args.providers or [p for p in PROVIDERS if p != "compile" or not interpreter]
    output = args.output or Path(__file__).parent / "results" / backend.device_name
    meta = _metadata(device, backend)
    if interpreter:
        print("NOTE: no accelerator: the kernel runs in Triton's CPU interpreter. These timings "
              "measure the interpreter, not kernel performance; only the host-overhead figure "
              "means something here.")
    result = run(device, args.dtypes, args.cases, sizes, names,
                 args.quick, not args.no_progress and sys.stderr.isatty())
    # Host path (CPU tensors; the driver stub only where Triton's CUDA launcher can take it).
    meta["host_path"] = host_path.measure(args.quick, driver_stub=interpreter)
    print(f"device {meta['device']} ({meta['backend']}, {meta['parallel_units']} units), "
          f"torch {meta['versions']['torch']}, triton {meta['versions']['triton']}, "
          f"{meta['date']}")
    print(f"device copy bandwidth: {result['copy_gbps']:.1f} GB/s; nominal peak: "
          + (f"{result['nominal_peak']['gbps']} GB/s ({result['nominal_peak']['source']})"
             if result["nominal_peak"] else "unknown for this device"))
    print(format_table(result["rows"]))
    meta["modelled"] = add_modelled(result["rows"], device)
    print(format_modelled(result["rows"], meta["modelled"]))
    print(host_path.format_report(meta["host_path"]))
    paths = write_outputs(output, meta, result)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0 if all(r.correct or r.note.startswith("did not run") for r in result["rows"]) \
        else 1


if __name__ == "__main__":
    sys.exit(main())
