"""Device backends: which Triton runs a tensor's kernel, on how many parallel units, with what.

- ``npu``: triton-ascend + torch_npu (imported lazily: only NPU tensors reach this code);
- ``cuda``: upstream Triton;
- ``cpu``: Triton's interpreter, so the same kernel source runs and is tested without an
  accelerator (and without setting ``TRITON_INTERPRET``).

A ``Backend`` is built once per device and cached; building it is the only place that asks a
driver for device properties.
"""

import contextlib
import inspect
import os
import re
import threading
import types
import warnings
from dataclasses import dataclass
from typing import Callable, ContextManager, Dict

import numpy as np
import torch
import triton
import triton.language as tl

from .configs import KernelConfig
from .kernels import mse_loss_backward_kernel

# triton-ascend's ``tl.load(..., care_padding=False)`` skips filling masked lanes (they are never
# stored). It also keeps triton-ascend's interpreter from casting a fill value to float64, which
# it refuses. Upstream Triton has no such keyword.
TRITON_HAS_CARE_PADDING = "care_padding" in inspect.signature(tl.load).parameters


@dataclass(frozen=True)
class Backend:
    """How to launch the kernel on one device."""

    name: str                 # "npu", "cuda" or "cpu"
    device_name: str          # normalised, names tuned tables: Ascend910B3, NVIDIA_H100_80GB_HBM3
    num_units: int            # NPU vector cores, CUDA SMs, CPU cores
    kernel: object            # launchable as ``kernel[grid](...)``
    supports_fp64: bool
    device_guard: Callable[[], ContextManager]  # makes this device current for the launch

    def launch_options(self, config: KernelConfig) -> dict:
        """The backend's own launch keywords for ``config``."""
        if self.name == "npu":
            return {"multibuffer": config.multibuffer}
        if self.name == "cuda":
            return {"num_warps": config.num_warps}
        return {}


_backends: Dict[torch.device, Backend] = {}
_backends_lock = threading.Lock()


def backend_for(device: torch.device) -> Backend:
    """The (cached) backend for ``device``; ``ValueError`` for a device type Triton can't run."""
    backend = _backends.get(device)
    if backend is None:
        with _backends_lock:
            backend = _backends.get(device) or _make_backend(device)
            _backends[device] = backend
    return backend


def normalise_device_name(name: str) -> str:
    """A device name fit for a file name: 'NVIDIA H100 80GB HBM3' -> 'NVIDIA_H100_80GB_HBM3'."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "unknown"


def _make_backend(device: torch.device) -> Backend:
    if device.type == "npu":
        import torch_npu  # noqa: F401  (registers torch.npu; present whenever NPU tensors are)

        properties = triton.runtime.driver.active.utils.get_device_properties(device.index)
        return Backend("npu", normalise_device_name(torch.npu.get_device_name(device.index)),
                       properties["num_vectorcore"], mse_loss_backward_kernel, False,
                       lambda: torch.npu.device(device))
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        return Backend("cuda", normalise_device_name(properties.name),
                       properties.multi_processor_count, mse_loss_backward_kernel, True,
                       lambda: torch.cuda.device(device))
    if device.type == "cpu":
        return Backend("cpu", "cpu", os.cpu_count() or 1,
                       _InterpretedKernel(mse_loss_backward_kernel), True, contextlib.nullcontext)
    raise ValueError(f"tensors on {device.type} devices are not supported "
                     "(supported: npu, cuda, cpu)")


class _InterpretedKernel:
    """``kernel[grid](...)`` run by Triton's interpreter, safely.

    ``InterpretedFunction`` interprets one function, so the kernel is re-bound to a copy of its
    module's globals in which every ``@triton.jit`` helper is interpreted too. The interpreter
    keeps its grid position in globals and patches ``triton.language`` in place for good; a
    lock serialises launches, and the patched namespaces are restored after each one so that
    Triton's compiler still works in the same process (for CUDA or NPU tensors, or the Ascend
    lowering check). During a launch, bfloat16 conversions round as the hardware does
    (``_cast_bfloat16_like_hardware``).
    """

    _lock = threading.Lock()
    # Namespaces the interpreter patches (triton/runtime/interpreter.py, _patch_lang).
    _patched = (tl, tl.core, tl.math, tl.tensor, tl.dtype)

    def __init__(self, kernel: triton.runtime.JITFunction):
        from triton.runtime.interpreter import InterpretedFunction, interpreter_builder

        self._builder = interpreter_builder

        module_globals = kernel.fn.__globals__
        twin_globals = dict(module_globals)
        for name, value in module_globals.items():
            if isinstance(value, triton.runtime.JITFunction):
                fn = value.fn
                twin = types.FunctionType(fn.__code__, twin_globals, fn.__name__,
                                          fn.__defaults__, fn.__closure__)
                twin_globals[name] = InterpretedFunction(twin)
        self._interpreted = twin_globals[kernel.fn.__name__]

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            with self._lock:
                saved = [dict(vars(namespace)) for namespace in self._patched]
                self._builder.cast_impl = _cast_bfloat16_like_hardware
                try:
                    with warnings.catch_warnings():
                        # numpy inside the interpreter: its own deprecations, and IEEE
                        # "invalid value" notes when a result is legitimately NaN.
                        warnings.simplefilter("ignore", DeprecationWarning)
                        warnings.simplefilter("ignore", RuntimeWarning)
                        self._interpreted[grid](*args, **kwargs)
                finally:
                    del self._builder.cast_impl
                    for namespace, before in zip(self._patched, saved):
                        _restore(namespace, before)
        return launch


_TORCH_FLOAT_TYPES = {tl.float16: torch.float16, tl.bfloat16: torch.bfloat16,
                      tl.float32: torch.float32, tl.float64: torch.float64}


def _cast_bfloat16_like_hardware(src, dst_type):
    """The interpreter's casts, with float <-> bfloat16 rounded to nearest even (by torch).

    Triton's interpreter keeps bfloat16 as uint16 bits; it narrows float32 by truncation and
    float64 through an integer cast. Compiled kernels round to nearest even.
    """
    from triton.runtime.interpreter import InterpreterBuilder, TensorHandle, interpreter_builder

    src_type, dst_scalar = src.dtype.scalar, dst_type.scalar
    if (tl.bfloat16 not in (src_type, dst_scalar) or src_type == dst_scalar
            or src_type not in _TORCH_FLOAT_TYPES or dst_scalar not in _TORCH_FLOAT_TYPES):
        return InterpreterBuilder.cast_impl(interpreter_builder, src, dst_type)
    values = torch.from_numpy(np.ascontiguousarray(src.data))
    if src_type == tl.bfloat16:
        values = values.view(torch.bfloat16)
    values = values.to(_TORCH_FLOAT_TYPES[dst_scalar])
    if dst_scalar == tl.bfloat16:
        values = values.view(torch.uint16)
    return TensorHandle(values.numpy(), dst_scalar)


def _restore(namespace, before: dict) -> None:
    for name in set(vars(namespace)) - set(before):
        delattr(namespace, name)
    for name, value in before.items():
        if vars(namespace).get(name) is not value:
            setattr(namespace, name, value)


def default_device() -> torch.device:
    """The best device present: an Ascend NPU, else a CUDA GPU, else the CPU (interpreter)."""
    try:
        import torch_npu  # noqa: F401
    except ImportError:
        pass
    else:
        if torch.npu.is_available():
            return torch.device("npu", torch.npu.current_device())
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
