"""Argument checks for the launcher: each failure is a ``TypeError`` or ``ValueError`` that names
the argument, raised before anything is allocated or launched.

Only tensor metadata is read (types, dtypes, devices, shapes, strides, storage addresses):
no check issues an ATen operator or synchronises a device.
"""

from typing import Dict, Optional, Union

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
REDUCTIONS = {"none": 0, "mean": 1, "sum": 2}  # torch.nn._reduction.get_enum's codes


def reduction_code(reduction: Union[int, str]) -> int:
    """0 (none), 1 (mean) or 2 (sum) from torch's enum or its name; ``ValueError`` otherwise.

    ATen treats any other integer as ``sum``; aclnn refuses it, and so do we.
    """
    if isinstance(reduction, str) and reduction in REDUCTIONS:
        return REDUCTIONS[reduction]
    if type(reduction) is int and reduction in REDUCTIONS.values():
        return reduction
    raise ValueError(
        f"reduction must be 0, 1, 2 or one of 'none', 'mean', 'sum'; got {reduction!r}"
    )


def check_inputs(inputs: Dict[str, torch.Tensor], out: Optional[torch.Tensor]) -> None:
    """Every input, and ``out`` unless it is ``None``, is a strided float tensor; all on one
    device."""
    device = None
    tensors = {**inputs, "out": out} if out is not None else inputs
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.is_nested or tensor.layout != torch.strided:
            kind = "a nested tensor" if tensor.is_nested else f"layout {tensor.layout}"
            raise TypeError(f"{name} must be a dense (strided) tensor, got {kind}")
        if tensor.is_neg():
            raise TypeError(f"{name} has its negative bit set (a lazily negated view, such as "
                            "x.conj().imag); pass x.resolve_neg()")
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(
                f"{name} has dtype {tensor.dtype}; supported: float16, bfloat16, float32, "
                "float64"
            )
        if device is None:
            device = tensor.device
        elif tensor.device != device:
            raise ValueError(
                f"{name} is on {tensor.device} but the arguments before it are on {device}"
            )


def check_fp64_support(inputs: Dict[str, torch.Tensor], out: Optional[torch.Tensor],
                       backend_name: str, supports_fp64: bool) -> None:
    """``TypeError`` naming the first float64 tensor on a backend without float64."""
    if supports_fp64:
        return
    for name, tensor in {**inputs, "out": out}.items():
        if tensor is not None and tensor.dtype == torch.float64:
            raise TypeError(f"{name} is float64, which the {backend_name} backend does not "
                            "support; use float32, float16 or bfloat16")


def check_out(out: torch.Tensor, shape: tuple) -> None:
    """``out`` has the broadcast ``shape`` and no element twice (metadata only: checked once
    per geometry)."""
    if tuple(out.shape) != tuple(shape):
        raise ValueError(f"out has shape {list(out.shape)} but the result's broadcast shape "
                         f"is {list(shape)}")
    if _may_overlap_itself(out):
        raise ValueError(f"out has overlapping elements (shape {list(out.shape)}, strides "
                         f"{list(out.stride())}): every element must have its own memory")


def check_out_memory(out: torch.Tensor, grad_output: torch.Tensor, self: torch.Tensor,
                     target: torch.Tensor) -> None:
    """No partial overlap of ``out`` with an input (sharing an input's elements one-to-one,
    e.g. ``out=self``, is fine). Depends on data pointers: checked on every call."""
    for name, tensor in (("grad_output", grad_output), ("self", self), ("target", target)):
        if _spans_overlap(out, tensor) and not _same_elements(out, tensor):
            raise ValueError(f"out partially overlaps {name}: it must either share no memory "
                             f"with {name} or be exactly {name}'s elements")


def _may_overlap_itself(tensor: torch.Tensor) -> bool:
    """Sufficient test for distinct elements: sorted by stride, each stride must step past
    everything the smaller strides reach."""
    reach = 0
    for stride, size in sorted((st, sz) for sz, st in zip(tensor.shape, tensor.stride())
                               if sz > 1):
        if stride <= reach:
            return True
        reach += (size - 1) * stride
    return False


def _spans_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Do the byte ranges ``a`` and ``b`` can touch in a shared storage intersect?"""
    if a.numel() == 0 or b.numel() == 0:
        return False
    if a.untyped_storage().data_ptr() != b.untyped_storage().data_ptr():
        return False
    (a_start, a_end), (b_start, b_end) = _byte_span(a), _byte_span(b)
    return a_start < b_end and b_start < a_end


def _byte_span(tensor: torch.Tensor):
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    start = tensor.data_ptr()
    return start, start + (last + 1) * tensor.element_size()


def _same_elements(out: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Does ``tensor``, broadcast to ``out``'s shape, read exactly ``out``'s element at every
    position? Then each lane reads its input before writing the same address: safe."""
    if tensor.dtype != out.dtype or tensor.data_ptr() != out.data_ptr():
        return False
    if tensor.dim() != out.dim() or tensor.shape != out.shape:
        return False
    return all(size == 1 or a == b
               for size, a, b in zip(out.shape, out.stride(), tensor.stride()))
