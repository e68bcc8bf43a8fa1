"""Numerical checking: a float64 reference and ULP distances in the result's dtype.

Shared by the tests, the correctness check (``python -m mse_grad_triton.tools.check``), the
tuner and the benchmark, which all refuse a result that is not within these bounds.
"""

import torch

from .reduction import gradient_scale, parse_reduction

# Explicit mantissa bits and smallest normal exponent per dtype (torch.finfo would do too;
# spelled out so the ULP definition is visible).
_MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}
_MIN_EXPONENT = {torch.float16: -14, torch.bfloat16: -126, torch.float32: -126,
                 torch.float64: -1022}
# The tolerances: fp16/bf16 <= 1 ULP, fp32 <= 4 ULP (fp64 held to the same 4).
MAX_ULP = {torch.float16: 1, torch.bfloat16: 1, torch.float32: 4, torch.float64: 4}


def reference(grad_output, self, target, reduction):
    """The exact formula in float64, from the same input values."""
    scale = gradient_scale(parse_reduction(reduction), self.numel())
    return grad_output.double() * ((self.double() - target.double()) * scale)


def ulp_distance(result: torch.Tensor, expected: torch.Tensor) -> torch.Tensor:
    """|result - expected| in ULPs of result.dtype at expected's magnitude, per element.

    Non-finite values must match exactly: NaN where expected is NaN, and +-inf where expected
    rounds to +-inf in result.dtype; a mismatch counts as an infinite distance.
    """
    dtype = result.dtype
    actual = result.double()
    expected = expected.double().expand_as(actual)
    rounded = expected.to(dtype).double()
    finite = torch.isfinite(rounded) & torch.isfinite(actual)
    # Exponent of the binade holding |expected|; at zero and in the subnormal range the step
    # is the smallest subnormal.
    exponent = torch.frexp(expected.abs()).exponent - 1
    exponent = torch.where(expected == 0, _MIN_EXPONENT[dtype], exponent)
    ulp = torch.exp2((exponent.clamp(min=_MIN_EXPONENT[dtype]) - _MANTISSA_BITS[dtype]).double())
    distance = torch.where(finite, (actual - expected).abs() / ulp, torch.zeros_like(actual))
    same_special = (torch.isnan(actual) & torch.isnan(rounded)) | (actual == rounded)
    return torch.where(finite | same_special, distance, torch.full_like(actual, float("inf")))


def max_ulp_error(result: torch.Tensor, grad_output: torch.Tensor, self: torch.Tensor,
                  target: torch.Tensor, reduction, chunk_elements: int = 1 << 22) -> float:
    """Worst ULP distance of ``result`` (any device) from the float64 reference of the same
    inputs, computed on the CPU a block of leading-dimension slices at a time, so that large
    device tensors need no full-size float64 copies."""
    scale = gradient_scale(parse_reduction(reduction), self.numel())
    if result.dim() == 0:
        result = result.reshape(1)
    views = [t.expand(result.shape) for t in (grad_output, self, target)]
    step = max(1, chunk_elements // max(1, result[0].numel()))
    worst = 0.0
    for start in range(0, result.shape[0], step):
        g, x, y = (v[start:start + step].cpu().double() for v in views)
        distance = ulp_distance(result[start:start + step].cpu(), g * ((x - y) * scale))
        worst = max(worst, distance.max().item() if distance.numel() else 0.0)
    return worst


def assert_ulp_close(result: torch.Tensor, expected: torch.Tensor, max_ulp=None) -> float:
    """Assert result is within MAX_ULP[result.dtype] of expected; returns the worst distance."""
    max_ulp = MAX_ULP[result.dtype] if max_ulp is None else max_ulp
    distance = ulp_distance(result, expected)
    worst = distance.max().item() if distance.numel() else 0.0
    if worst > max_ulp:
        index = tuple(int(i) for i in torch.nonzero(distance == distance.max())[0])
        raise AssertionError(
            f"{worst:.3g} ULP > {max_ulp} at {index}: got {result[index].item()!r}, "
            f"expected {expected.expand_as(result)[index].item()!r} ({result.dtype})"
        )
    return worst


def storage_extent(tensor) -> int:
    """Elements from a tensor's first to its last reachable one (its strides' span)."""
    shape, stride = tuple(tensor.shape), tuple(tensor.stride())
    return 1 + sum((n - 1) * s for n, s in zip(shape, stride)) if all(shape) else 0


def make_like(tensor, seed, device="cpu") -> torch.Tensor:
    """``make``'s values with ``tensor``'s shape, strides (broadcast ones included) and dtype
    (``tensor`` may be a meta tensor or only metadata)."""
    return make([storage_extent(tensor)], tensor.dtype, seed, device=device).as_strided(
        tuple(tensor.shape), tuple(tensor.stride()))


def make(shape, dtype, seed, low=-4.0, high=4.0, device="cpu"):
    """Deterministic uniform values in [low, high), generated in float64 on the CPU, then cast
    and moved (contiguous) to ``device``."""
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low)
            + low).to(device=device, dtype=dtype)
