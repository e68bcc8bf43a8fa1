"""Argument checks for the launcher: each failure is a ``TypeError`` or ``ValueError`` that names
the argument, raised before anything is allocated or launched.

Only tensor metadata is read (types, dtypes, devices, shapes, strides, storage addresses):
no check issues an ATen operator or synchronises a device.
"""

from typing import Dict, Optional

import torch

SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# Every supported dtype's name (as tuned tables, the tuner and the tools write it).
DTYPE_NAMES = {dtype: str(dtype).replace("torch.", "") for dtype in SUPPORTED_DTYPES}
DTYPES_BY_NAME = {name: dtype for dtype, name in DTYPE_NAMES.items()}


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
        if name != "grad_output" and tensor._is_zerotensor():
            raise TypeError(f"{name} is a ZeroTensor (it has no memory); pass "
                            "torch.zeros(...) instead")
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


def check_out_autograd(out: torch.Tensor, grad_output: torch.Tensor, self: torch.Tensor,
                       target: torch.Tensor) -> None:
    """ATen's rules for an ``out=`` call: no autograd through it (grad mode on and any tensor
    requiring grad), and no inference tensor written outside inference mode."""
    if torch.is_grad_enabled() and (out.requires_grad or grad_output.requires_grad
                                    or self.requires_grad or target.requires_grad):
        raise ValueError("out=... does not support automatic differentiation, but out or an "
                         "input requires grad: call without out, or under torch.no_grad()")
    if out.is_inference() and not torch.is_inference_mode_enabled():
        raise ValueError("out is an inference tensor: it can only be written inside "
                         "torch.inference_mode()")


def check_out_memory(out: torch.Tensor, grad_output: torch.Tensor, self: torch.Tensor,
                     target: torch.Tensor) -> None:
    """No overlap of ``out``'s memory with an input's, other than being exactly its elements
    (``out=self`` is fine: each lane reads its input before writing the same address).
    Decided by the bytes each touches — not by storage identity, which two tensors over the
    same memory (e.g. from one numpy array) need not share. Depends on data pointers: checked
    on every call; the element-by-element test runs only where the byte ranges intersect."""
    for name, tensor in (("grad_output", grad_output), ("self", self), ("target", target)):
        if not _spans_overlap(out, tensor) or _same_elements(out, tensor):
            continue
        shared = _elements_intersect(out, tensor)
        if shared is None:
            raise ValueError(f"out and {name} occupy intersecting address ranges and are too "
                             f"large (over {_EXACT_LIMIT} elements) to compare element by "
                             f"element: could not prove that they share no memory")
        if shared:
            raise ValueError(f"out partially overlaps {name}: it shares memory with {name} "
                             f"without being exactly {name}'s elements; it must share no "
                             f"memory with {name}, or be {name} itself")


# Beyond this many elements the exact (element by element) memory tests are not attempted.
_EXACT_LIMIT = 1 << 22


def _may_overlap_itself(tensor: torch.Tensor) -> bool:
    """Does some memory hold two of the tensor's elements? A sufficient test first (sorted by
    stride, each stride steps past everything the smaller strides reach); where it cannot
    decide, an exact one element by element; beyond ``_EXACT_LIMIT`` elements, assume so."""
    reach = 0
    for stride, size in sorted((st, sz) for sz, st in zip(tensor.shape, tensor.stride())
                               if sz > 1):
        if stride <= reach:
            break
        reach += (size - 1) * stride
    else:
        return False
    offsets = _element_offsets(tensor)  # sorted: a repeated offset sits next to its twin
    return offsets is None or bool((offsets[1:] == offsets[:-1]).any())


def _element_offsets(tensor: torch.Tensor):
    """Sorted element offsets (in elements) from the tensor's first element, as a numpy
    array; ``None`` beyond ``_EXACT_LIMIT`` elements or without numpy."""
    if tensor.numel() > _EXACT_LIMIT:
        return None
    try:
        import numpy as np
    except ImportError:
        return None
    offsets = np.zeros(1, dtype=np.int64)
    for size, stride in zip(tensor.shape, tensor.stride()):
        if size > 1:
            offsets = (offsets[:, None] + np.arange(size, dtype=np.int64) * stride).ravel()
    return np.sort(offsets)


def _elements_intersect(a: torch.Tensor, b: torch.Tensor):
    """Do the bytes of ``a``'s elements and ``b``'s intersect? ``None`` if too large to say."""
    import numpy as np

    a_offsets, b_offsets = _element_offsets(a), _element_offsets(b)
    if a_offsets is None or b_offsets is None:
        return None
    a_width, b_width = a.element_size(), b.element_size()
    a_starts = np.unique(a_offsets * a_width + a.data_ptr())
    b_starts = np.unique(b_offsets * b_width + b.data_ptr())
    # For each of b's elements: the last of a's starting at or before it, and the next one.
    before = np.searchsorted(a_starts, b_starts, side="right") - 1
    covered = (before >= 0) & (a_starts[np.maximum(before, 0)] + a_width > b_starts)
    after = before + 1
    reached = (after < len(a_starts)) & (
        a_starts[np.minimum(after, len(a_starts) - 1)] < b_starts + b_width)
    return bool((covered | reached).any())


def _spans_overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Do the address ranges ``a`` and ``b`` can touch intersect (whatever their storages)?"""
    if a.numel() == 0 or b.numel() == 0:
        return False
    (a_start, a_end), (b_start, b_end) = _byte_span(a), _byte_span(b)
    return a_start < b_end and b_start < a_end


def _byte_span(tensor: torch.Tensor):
    last = sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    start = tensor.data_ptr()
    return start, start + (last + 1) * tensor.element_size()


def _same_elements(out: torch.Tensor, tensor: torch.Tensor) -> bool:
    """Does ``tensor``, broadcast to ``out``'s shape, read exactly ``out``'s element (the same
    bytes, whatever the dtype) at every position? Then each lane reads its input before
    writing the same address: safe."""
    if tensor.element_size() != out.element_size() or tensor.data_ptr() != out.data_ptr():
        return False
    if tensor.dim() != out.dim() or tensor.shape != out.shape:
        return False
    return all(size == 1 or a == b
               for size, a, b in zip(out.shape, out.stride(), tensor.stride()))
