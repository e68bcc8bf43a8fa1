"""Device backends: which Triton runs a tensor's kernel, on how many parallel units, with what.

- ``npu``: triton-ascend + torch_npu (imported lazily: only NPU tensors reach this code);
- ``cuda``: upstream Triton;
- ``cpu``: Triton's interpreter, so the same kernel source runs and is tested without an
  accelerator (and without setting ``TRITON_INTERPRET``).

A ``DeviceBackend`` is built once per device and cached; building it is the only place that asks a
driver for device properties. Compiled backends launch a kernel compiled for a plan directly,
without Triton's per-call JIT work (``CompiledBackend``).
"""

import contextlib
import functools
import inspect
import os
import re
import threading
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Dict, Iterator, Optional, Tuple

import torch
import triton
import triton.language as tl

from . import chips, generation, interpreter, triton_compat
from .configs import KernelConfig

# triton-ascend's ``tl.load(..., care_padding=False)`` skips filling masked lanes (they are never
# stored). It also keeps triton-ascend's interpreter from casting a fill value to float64, which
# it refuses. Upstream Triton has no such keyword.
TRITON_HAS_CARE_PADDING = "care_padding" in inspect.signature(tl.load).parameters


# Whether the kernel computes in float64 on each device kind (Ascend's vector units have no
# float64 arithmetic; aclnnMseLossBackward refuses it too).
SUPPORTS_FP64 = {"npu": False, "cuda": True, "cpu": True}


@dataclass(frozen=True)
class DeviceBackend:
    """A device's properties for planning a launch; subclasses launch."""

    kind: str                 # "npu", "cuda" or "cpu"
    device_name: str          # normalised, names tuned tables: Ascend910B3, NVIDIA_H100_80GB_HBM3
    num_units: int            # NPU vector cores, CUDA SMs, CPU cores
    supports_fp64: bool

    @functools.cached_property
    def chip(self) -> Optional[chips.Chip]:
        """An NPU's chip facts (``chips.chip`` of its name; None on other devices)."""
        return chips.chip(self.device_name) if self.kind == "npu" else None

    def launch_options(self, config: KernelConfig) -> dict:
        """The backend's own launch keywords for ``config``."""
        if self.kind == "npu":
            return {"multibuffer": config.multibuffer}
        if self.kind == "cuda":
            # No multiply-add to fuse in this kernel; pinned (Triton 3.10's default) so that
            # the compiled code does not change with Triton's default.
            return {"num_warps": config.num_warps, "enable_fp_fusion": False}
        return {}

    def launch(self, plan, operands: Tuple[torch.Tensor, ...]) -> None:
        """Launch ``plan.kernel`` on ``operands`` (its five pointer arguments)."""
        raise NotImplementedError(f"{self.kind} backend of {self.device_name} cannot launch")


@dataclass(frozen=True)
class CompiledBackend(DeviceBackend):
    """An NPU or a CUDA GPU: Triton compiles the kernel; later launches skip its JIT.

    The first launch of a plan with a given pointer alignment goes through ``kernel[grid]``
    (binder, specialisation, cache lookup, compile) and keeps the compiled kernel; later ones
    launch it directly (``triton_compat.prepare_launch``), as FlagGems' ``LibEntry`` does.
    That is safe because everything Triton specialises on is fixed by the plan (dtypes,
    integer arguments: the plan is cached per geometry) except each pointer's 16-byte
    alignment, which is part of the cache key.
    """

    device: torch.device = torch.device("cpu")
    # The index of the process's current device; None where there is one device only (the
    # launch never needs to switch).
    current_device: Optional[Callable[[], int]] = None
    device_guard: Callable[[], ContextManager] = contextlib.nullcontext
    # The raw current stream of a device index (Triton's driver's getter).
    current_stream: Callable[[int], int] = field(default_factory=triton_compat.stream_getter,
                                                 compare=False)

    def launch(self, plan, operands):
        if self.current_device is not None and self.current_device() != self.device.index:
            with self.device_guard():  # the tensors' device becomes current for the launch
                return self.launch(plan, operands)
        grad_output, self_, target, out, negated_out = operands
        out_pointer = out.data_ptr()
        pointers = (grad_output.data_ptr(), self_.data_ptr(), target.data_ptr(), out_pointer,
                    out_pointer if negated_out is out else negated_out.data_ptr())
        # Triton specialises each pointer on 16-byte alignment: part of the compiled kernel's key.
        if (pointers[0] | pointers[1] | pointers[2] | pointers[3] | pointers[4]) & 15 == 0:
            aligned = True
        else:
            aligned = tuple(pointer % 16 == 0 for pointer in pointers)
        launch = plan.compiled.get(aligned)
        if launch is None or triton_compat.hooks_installed():
            self._launch_through_jit(plan, operands, aligned)
        else:  # both compilers' C launchers take a pointer as an int as well as a tensor
            launch(plan.num_programs, self.current_stream(self.device.index),
                   (*pointers, *plan.launch_tail))

    def _launch_through_jit(self, plan, operands, aligned):
        """``kernel[grid](...)``, keeping the compiled kernel for direct launches."""
        compiled = plan.kernel[(plan.num_programs,)](
            *operands, *plan.scalar_args, **plan.constexprs, **self.launch_options(plan.config))
        plan.compiled[aligned] = triton_compat.prepare_launch(compiled)


@dataclass(frozen=True)
class InterpretedBackend(DeviceBackend):
    """The CPU: Triton's interpreter runs the kernel's source (tests, no accelerator)."""

    kernels: Dict[object, interpreter.InterpretedKernel] = field(
        default_factory=dict, compare=False, hash=False)

    def launch(self, plan, operands):
        kernel = self.kernels.get(plan.kernel)
        if kernel is None:
            kernel = self.kernels.setdefault(plan.kernel,
                                             interpreter.InterpretedKernel(plan.kernel))
        kernel[(plan.num_programs,)](*operands, *plan.scalar_args, **plan.constexprs)


_backends: Dict[torch.device, DeviceBackend] = {}
_backends_lock = threading.Lock()


@contextlib.contextmanager
def overridden(device: torch.device, backend: DeviceBackend) -> Iterator[DeviceBackend]:
    """Launch through ``backend`` for tensors on ``device`` inside the block (a stand-in that
    records or skips launches, for tests and host-overhead measurements)."""
    device = torch.device(device)
    with _backends_lock:
        previous = _backends.get(device)
        _backends[device] = backend
    generation.bump()
    try:
        yield backend
    finally:
        with _backends_lock:
            if previous is None:
                _backends.pop(device, None)
            else:
                _backends[device] = previous
        generation.bump()


def backend_for(device: torch.device) -> DeviceBackend:
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


def _make_backend(device: torch.device) -> DeviceBackend:
    if device.type == "npu":
        import torch_npu  # noqa: F401  (registers torch.npu; present whenever NPU tensors are)

        device = torch.device("npu", device.index if device.index is not None
                              else torch.npu.current_device())
        properties = triton.runtime.driver.active.utils.get_device_properties(device.index)
        name = normalise_device_name(torch.npu.get_device_name(device.index))
        switch = torch.npu.current_device if torch.npu.device_count() > 1 else None
        return CompiledBackend("npu", name, properties["num_vectorcore"],
                               SUPPORTS_FP64["npu"], device,
                               switch, lambda: torch.npu.device(device))
    if device.type == "cuda":
        device = torch.device("cuda", device.index if device.index is not None
                              else torch.cuda.current_device())
        properties = torch.cuda.get_device_properties(device)
        switch = torch.cuda.current_device if torch.cuda.device_count() > 1 else None
        return CompiledBackend("cuda", normalise_device_name(properties.name),
                               properties.multi_processor_count, SUPPORTS_FP64["cuda"], device,
                               switch, lambda: torch.cuda.device(device))
    if device.type == "cpu":
        return InterpretedBackend("cpu", "cpu", os.cpu_count() or 1, SUPPORTS_FP64["cpu"])
    raise ValueError(f"tensors on {device.type} devices are not supported "
                     "(supported: npu, cuda, cpu)")


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
