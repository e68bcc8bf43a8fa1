"""The C++ override of ``aten::mse_loss_backward`` (``csrc/cpp_override.cpp``), which
``enable()`` installs in front of its Python override where it can be built.

Below a device's tuned crossover a training step's backward is PyTorch's own kernel; through
the C++ override that costs what the stock call costs (an unboxed call after a cached
crossover), where a Python override adds its own call and a boxed one into PyTorch's kernel.
Every other call goes on to the Python override.

Built at first use by PyTorch's extension builder (``torch.utils.cpp_extension``: a C++
compiler and ninja; 20–30 s, once per PyTorch installation), cached under
``$MSE_GRAD_TRITON_CACHE_DIR`` (default ``~/.cache/mse_grad_triton``). Where it cannot be built
``enable()`` warns once and installs the Python override alone; ``MSE_GRAD_TRITON_CPP_OVERRIDE=0``
chooses that without trying.
"""

import hashlib
import os
import shutil
import sys
import threading
import warnings
from pathlib import Path
from typing import Optional

import torch

from . import generation

SOURCE = Path(__file__).resolve().parent / "csrc" / "cpp_override.cpp"
ENABLE_ENV = "MSE_GRAD_TRITON_CPP_OVERRIDE"
CACHE_DIR_ENV = "MSE_GRAD_TRITON_CACHE_DIR"
_LIBRARY_NAME = "mse_grad_triton_cpp"

_lock = threading.Lock()
_loaded: Optional[bool] = None   # None: not tried yet
_why_not: Optional[str] = None


def build_directory() -> Path:
    """Where the built library is cached: one folder per PyTorch installation and Python (the
    build bakes in both)."""
    root = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "mse_grad_triton")
    installation = hashlib.sha256(f"{torch.__file__}|{torch.__version__}|{sys.version}"
                                  .encode()).hexdigest()[:16]
    return root / "cpp_override" / f"torch-{torch.__version__}-{installation}"


def available() -> bool:
    """May ``enable()`` install the C++ override? Builds or loads it the first time
    (thread-safe); where that fails, warns once with the reason (``why_unavailable``) and stays
    False. False without trying while ``$MSE_GRAD_TRITON_CPP_OVERRIDE`` is ``0``."""
    global _loaded, _why_not
    if _disabled():
        return False
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is None:
            _why_not = _load()
            _loaded = _why_not is None
            if _why_not is not None:
                warnings.warn(f"mse_grad_triton: enable() installs its Python override only "
                              f"(the C++ override is unavailable: {_why_not}); calls below "
                              "the tuned crossover pay a Python call each", stacklevel=3)
    return _loaded


def why_unavailable() -> Optional[str]:
    """Why ``enable()`` does not use the C++ override (None when it does, or before
    ``available()`` first ran)."""
    return f"${ENABLE_ENV} is 0" if _disabled() else _why_not


def _disabled() -> bool:
    return os.environ.get(ENABLE_ENV, "1") == "0"


def _load() -> Optional[str]:
    """Build (if need be) and load the library; None, or why it could not be."""
    try:
        from torch.utils import cpp_extension

        _find_ninja()
        folder = build_directory()
        folder.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(name=_LIBRARY_NAME, sources=[str(SOURCE)], build_directory=str(folder),
                           extra_cflags=["-O2"], is_python_module=False, verbose=False)
    except Exception as error:  # no compiler or ninja, a PyTorch it does not compile against
        return _summary(error)
    generation.on_bump(forget_crossovers)
    return None


def _find_ninja() -> None:
    """PyTorch's builder runs ``ninja`` from $PATH; the ``ninja`` package this one depends on
    installs it beside the interpreter, which is not on $PATH when a venv is not activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:
            return
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + ninja.BIN_DIR


def _summary(error: Exception) -> str:
    """A build failure in one line: the compiler's first error, else the message's last line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [""]
    first_error = next((line for line in lines if "error:" in line), lines[-1])
    return f"{type(error).__name__}: {first_error[:300]}"


def install(dispatch_key: str) -> bool:
    """Override ``aten::mse_loss_backward`` for ``dispatch_key``; False (nothing installed)
    where PyTorch has no out= kernel of its own there. Needs ``available()``."""
    return torch.ops.mse_grad_triton_cpp.install(dispatch_key)


def remove(dispatch_key: str) -> None:
    """Give ``aten::mse_loss_backward`` for ``dispatch_key`` back to what was there before."""
    torch.ops.mse_grad_triton_cpp.remove(dispatch_key)


def forget_crossovers() -> None:
    """Drop the crossovers the C++ override cached (the tables or backends in force changed)."""
    torch.ops.mse_grad_triton_cpp.forget_crossovers()
