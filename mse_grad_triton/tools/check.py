"""Correctness check on the device present: this kernel and the native op against a float64
reference, in ULPs of the result's dtype.

    python -m mse_grad_triton.tools.check [--device npu|cuda|cpu] [--size ROWSxCOLS]

Prints one row per dtype x reduction x layout (the kernel's and the native op's worst ULP
error, pass/fail against fp16/bf16 <= 1, fp32 <= 4) and exits 1 if the kernel fails anywhere.
The native op is ``aten::mse_loss_backward`` on the same device: aclnnMseLossBackward through
torch_npu on an NPU, ATen's kernel on CUDA and CPU.
"""

import argparse
import sys
from typing import Callable, Dict, List, Tuple

import torch

from .. import cli, mse_loss_backward
from ..reduction import parse_reduction
from ..testing import MAX_ULP, make, max_ulp_error

DTYPES = (torch.float32, torch.float16, torch.bfloat16)
Inputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def layouts(rows: int, cols: int) -> Dict[str, Callable[[torch.dtype], Inputs]]:
    """The input layouts checked, as CPU tensors: name -> (dtype -> (grad, self, target))."""
    return {
        "contiguous": lambda d: (make([rows, cols], d, 1), make([rows, cols], d, 2),
                                 make([rows, cols], d, 3)),
        "scalar grad": lambda d: (make([], d, 1), make([rows, cols], d, 2),
                                  make([rows, cols], d, 3)),
        "broadcast target": lambda d: (make([], d, 1), make([rows, cols], d, 2),
                                       make([rows, 1], d, 3)),
        "transposed self": lambda d: (make([rows, cols], d, 1), make([cols, rows], d, 2).t(),
                                      make([rows, cols], d, 3)),
        "expanded grad": lambda d: (make([cols], d, 1).expand(rows, cols),
                                    make([rows, cols], d, 2), make([rows, cols], d, 3)),
    }


def run_check(device: torch.device, rows: int, cols: int) -> List[dict]:
    """One record per dtype x reduction x layout."""
    records = []
    for dtype in DTYPES:
        for reduction in ("none", "mean", "sum"):
            for name, build in layouts(rows, cols).items():
                inputs = [t.to(device) for t in build(dtype)]
                kernel = max_ulp_error(mse_loss_backward(*inputs, reduction), *inputs,
                                       reduction)
                native = max_ulp_error(torch.ops.aten.mse_loss_backward(
                    *inputs, parse_reduction(reduction)), *inputs, reduction)
                records.append(dict(dtype=str(dtype).replace("torch.", ""), reduction=reduction,
                                    layout=name, kernel_ulp=kernel, native_ulp=native,
                                    passed=kernel <= MAX_ULP[dtype]))
    return records


def format_table(records: List[dict]) -> str:
    header = f"{'dtype':<9} {'reduction':<9} {'layout':<17} {'kernel ULP':>10} " \
             f"{'native ULP':>10}  result"
    lines = [header, "-" * len(header)]
    for r in records:
        lines.append(f"{r['dtype']:<9} {r['reduction']:<9} {r['layout']:<17} "
                     f"{r['kernel_ulp']:>10.3g} {r['native_ulp']:>10.3g}  "
                     f"{'pass' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_device_argument(parser)
    parser.add_argument("--size", type=cli.parse_shape_2d, default=None,
                        help="ROWSxCOLS of the result (default 1024x4097; 64x257 on CPU)")
    args = parser.parse_args(argv)
    device = cli.device_from(args, parser)
    rows, cols = args.size or ((64, 257) if device.type == "cpu" else (1024, 4097))
    cli.check_sizes_fit(parser, "--size", [rows * cols], device)

    print(f"mse-grad-triton correctness check on {device} ({rows}x{cols}, torch "
          f"{torch.__version__}); budget: fp16/bf16 <= 1 ULP, fp32 <= 4 ULP")
    if device.type == "cpu":
        print("CPU: the kernel runs in Triton's interpreter; 'native' is ATen's CPU kernel.")
    records = run_check(device, rows, cols)
    print(format_table(records))
    failed = sum(not r["passed"] for r in records)
    print(f"{len(records) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
