"""Running the kernels' source on the CPU through Triton's interpreter, safely.

Triton's interpreter patches ``triton.language`` in place and narrows bfloat16 by truncation;
``InterpretedKernel`` confines both to one launch (so Triton's compiler keeps working in the
same process) and rounds bfloat16 as the hardware does. Used by ``backends.InterpretedBackend``.
"""

import threading
import types
import warnings

import torch
import triton
import triton.language as tl


class InterpretedKernel:
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
    import numpy as np  # the interpreter's own dependency: not needed where kernels compile

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
