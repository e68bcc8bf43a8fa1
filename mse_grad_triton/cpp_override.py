"""The C++ override of ``aten::mse_loss_backward`` (``csrc/cpp_override.cpp``), which
``enable()`` installs in front of its Python override where it can be built.

Below a device's tuned crossover a training step's backward is PyTorch's own kernel; through
the C++ override that costs what the stock call costs (an unboxed call after a cached
crossover), where a Python override adds its own call and a boxed one into PyTorch's kernel.
Every other call goes on to the Python override.

Built at first use by PyTorch's extension builder (``torch.utils.cpp_extension``: a C++
compiler and ninja; 20–30 s, once per PyTorch installation and source), cached under
``$MSE_GRAD_TRITON_CACHE_DIR`` (default ``~/.cache/mse_grad_triton``). Where it cannot be built
``enable()`` warns once and installs the Python override alone; ``MSE_GRAD_TRITON_CPP_OVERRIDE=0``
chooses that without trying.

The cache cannot hang or wedge a later process:

- a complete cache (``complete.json`` naming the library and its SHA-256) is loaded without
  writing anything, so a read-only, pre-built cache works;
- a build runs in a scratch folder of its own and is published by renaming the library into
  place and then ``complete.json`` (atomic), so a killed build leaves no half-written cache;
- processes take turns on ``build.lock`` (``fcntl.flock``: the system releases it when its
  holder dies). A lock left by a build that was killed is taken over with a warning; one held
  for longer than ``$MSE_GRAD_TRITON_BUILD_WAIT`` seconds (default 300, more than a build
  takes) is given up on with a warning, and this process builds by itself;
- a cache that is corrupt (an unreadable ``complete.json``, a library whose SHA-256 differs)
  is rebuilt, with a warning that names the file; where the cache folder is not writable, the
  build goes to a temporary folder and is not kept.
"""

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

import torch

from . import generation

SOURCE = Path(__file__).resolve().parent / "csrc" / "cpp_override.cpp"
ENABLE_ENV = "MSE_GRAD_TRITON_CPP_OVERRIDE"
CACHE_DIR_ENV = "MSE_GRAD_TRITON_CACHE_DIR"
BUILD_WAIT_ENV = "MSE_GRAD_TRITON_BUILD_WAIT"
DEFAULT_BUILD_WAIT_SECONDS = 300.0
COMPLETE = "complete.json"   # what a finished build publishes: the library's name and SHA-256
LOCK = "build.lock"
_LIBRARY_NAME = "mse_grad_triton_cpp"

_lock = threading.Lock()
_loaded: Optional[bool] = None   # None: not tried yet
_why_not: Optional[str] = None


def build_directory() -> Path:
    """Where the built library is cached: one folder per PyTorch installation, Python and
    version of the C++ source (the build bakes in all three)."""
    root = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "mse_grad_triton")
    installation = hashlib.sha256(f"{torch.__file__}|{torch.__version__}|{sys.version}|"
                                  f"{_sha256(SOURCE)}".encode()).hexdigest()[:16]
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
    """Load the cached library, building it first if need be; None, or why it could not be."""
    try:
        folder = build_directory()
        library = complete_library(folder)
        if library is None:
            with _build_turn(folder):
                # Another process may have finished while this one waited.
                library = complete_library(folder, quiet=True) or _build(folder)
        else:
            torch.ops.load_library(str(library))
    except Exception as error:  # no compiler or ninja, a PyTorch it does not compile against
        return _summary(error)
    generation.on_bump(forget_crossovers)
    return None


def complete_library(folder: Path, quiet: bool = False) -> Optional[Path]:
    """The library a finished build published in ``folder``, or None: not built yet, or
    corrupt (with a warning that names the file, unless ``quiet``). Reads only."""
    record = folder / COMPLETE
    if not record.exists():
        return None
    try:
        published = json.loads(record.read_bytes().decode("utf-8"))
        library = folder / Path(published["library"]).name
        intact = _sha256(library) == published["sha256"]
        problem = None if intact else f"{library} does not match the SHA-256 in {record}"
    except (OSError, ValueError, KeyError, TypeError) as error:
        problem = f"{record} is unreadable ({type(error).__name__}: {error})"
    if problem is None:
        return library
    if not quiet:
        warnings.warn(f"mse_grad_triton: the C++ override's cache is corrupt: {problem}; "
                      "rebuilding it", stacklevel=4)
    return None


def _build(folder: Path) -> None:
    """Build and load the library in a scratch folder, then publish it to ``folder`` (or, where
    ``folder`` is not writable, leave it in a temporary folder that is not kept)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_abandoned_scratch(folder)
        scratch = Path(tempfile.mkdtemp(prefix="build-", dir=folder))
    except OSError as error:
        warnings.warn(f"mse_grad_triton: the C++ override's cache {folder} is not writable "
                      f"({error.strerror}); building it in a temporary folder, not kept",
                      stacklevel=4)
        compile_library(Path(tempfile.mkdtemp(prefix=f"{_LIBRARY_NAME}-")))
        return
    try:
        built = compile_library(scratch)
        digest = _sha256(built)
        library = folder / f"{_LIBRARY_NAME}-{digest[:16]}{built.suffix}"
        os.replace(built, library)  # the loaded library's mapping survives the rename
        record = scratch / COMPLETE
        record.write_text(json.dumps({"library": library.name, "sha256": digest,
                                      "torch": torch.__version__}))
        os.replace(record, folder / COMPLETE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def compile_library(scratch: Path) -> Path:
    """Compile ``csrc/cpp_override.cpp`` in ``scratch`` with PyTorch's extension builder and
    load it into this process; the library's path."""
    _find_ninja()
    # A CUDA build of torch without a GPU logs "No CUDA runtime is found" when the builder is
    # imported: noise for a C++-only extension.
    builder_log = logging.getLogger("torch.utils.cpp_extension")
    level = builder_log.level
    builder_log.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        builder_log.setLevel(level)
    path = cpp_extension.load(name=_LIBRARY_NAME, sources=[str(SOURCE)],
                              build_directory=str(scratch), extra_cflags=["-O2", *_feature_flags()],
                              is_python_module=False, verbose=False)
    return Path(path)


def _feature_flags() -> list:
    """Build-time choices from the torch headers being compiled against: PyTorch >= 2.14
    declares ``SafeKernelFunction::kernelFunction()``, the public way to the unboxed kernel;
    older ones have only the private member (see the C++ source)."""
    from torch.utils.cpp_extension import include_paths

    return ["-DMSE_GRAD_TRITON_PUBLIC_KERNEL_FUNCTION"] if declares_kernel_function(
        include_paths()) else []


def declares_kernel_function(include_dirs) -> bool:
    """Do the torch headers under ``include_dirs`` declare ``SafeKernelFunction``'s public
    ``kernelFunction()`` accessor?"""
    for directory in include_dirs:
        header = Path(directory) / "ATen" / "core" / "boxing" / "KernelFunction.h"
        if header.is_file():
            text = header.read_text(errors="replace")
            definition = re.search(r"\bclass\s+(?:\w+\s+)?SafeKernelFunction\s*(?::[^{;]*)?\{",
                                   text)  # the definition, not a forward declaration
            start = definition.end() if definition else -1
            body = text[start:text.find("\n};", start)] if start >= 0 else ""
            return re.search(r"\bkernelFunction\s*\(\s*\)\s*const\b", body) is not None
    return False


@contextlib.contextmanager
def _build_turn(folder: Path) -> Iterator[None]:
    """This process's turn to build in ``folder``: ``build.lock`` held exclusively, for at
    most ``$MSE_GRAD_TRITON_BUILD_WAIT`` seconds of waiting (then, with a warning, without
    it). A lock file still naming its holder was left by a build that was killed."""
    import fcntl

    lock_path = folder / LOCK
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(lock_path, "a+")
    except OSError:  # a read-only cache: _build says so
        yield
        return
    with handle:
        deadline = time.monotonic() + _build_wait()
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if time.monotonic() >= deadline:
                    warnings.warn(f"mse_grad_triton: waited {_build_wait():g} s for another "
                                  f"process's build of the C++ override (lock {lock_path}, "
                                  f"{_holder(handle)}); building without it", stacklevel=5)
                    yield
                    return
                time.sleep(0.1)
        holder = _holder(handle)
        if holder:
            warnings.warn(f"mse_grad_triton: a build of the C++ override was interrupted "
                          f"(lock {lock_path}, {holder}); taking it over", stacklevel=5)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()  # an empty lock file: nobody's build is in progress
            handle.flush()
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(handle) -> str:
    handle.seek(0)
    return handle.read().strip()


def _build_wait() -> float:
    try:
        return max(0.0, float(os.environ.get(BUILD_WAIT_ENV, DEFAULT_BUILD_WAIT_SECONDS)))
    except ValueError:
        return DEFAULT_BUILD_WAIT_SECONDS


def _remove_abandoned_scratch(folder: Path) -> None:
    """Scratch folders of killed builds (older than any build in progress can be)."""
    cutoff = time.time() - max(_build_wait(), DEFAULT_BUILD_WAIT_SECONDS)
    for scratch in folder.glob("build-*"):
        with contextlib.suppress(OSError):
            if scratch.stat().st_mtime < cutoff:
                shutil.rmtree(scratch, ignore_errors=True)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def crossover_epoch() -> int:
    """How many times the C++ override's cached crossovers have been dropped."""
    return torch.ops.mse_grad_triton_cpp.crossover_epoch()
