"""Huawei's own Ascend compiler, ``bishengir-compile``, run on a CPU host as triton-ascend runs it
(REFERENCE.md section 8).

triton-ascend's last stage hands triton-adapter-opt's Linalg to ``bishengir-compile``: the whole
HFusion/HIVM pipeline (bufferisation, memory planning, multi-buffering, sync insertion), then
``hivmc``, the closed codegen. Without ``hivmc`` it stops at that boundary and, with
``--save-temps``, leaves the final HIVM; that is what the Ascend gate reads. Each toolchain
(``chips.Toolchain``) has its own binary: ``bishengir-compile`` for A2/A3,
``bishengir-compile-a5`` for the 950 series (both in the ``ascendnpu-ir`` wheel).

    find_compiler(toolchain)  CANN's on $PATH, else the ascendnpu-ir wheel's
    compile_linalg(...)       one kernel for one target: status, final HIVM, memory plan (cached)

A compile's status, from the compiler's own notes:

- ``clean``: it reached the codegen boundary at once;
- ``code-motion retry``: only after the compiler's retry with code motion off (UB overflow);
- ``multibuffer dropped``: only after it also turned multi-buffering off, although asked for;
- ``overflow``: UB overflow even then (``required_ub_bytes`` says how much it wanted);
- ``error``: any other failure (``error`` has the compiler's message).

``bishengir-compile-a5`` prints no note when it retries, so on the 950 series ``clean`` means it
reached the boundary, possibly after a silent retry.
"""

import dataclasses
import functools
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional

from .. import chips

PATH_ENV = "MSE_GRAD_TRITON_BISHENGIR"   # an explicit bishengir-compile to use (A2/A3)
STATUSES = ("clean", "code-motion retry", "multibuffer dropped", "overflow", "error")
RUNNABLE = ("clean",)  # what the launcher, a table or a winning candidate may use


@dataclasses.dataclass(frozen=True)
class Compiler:
    """A ``bishengir-compile`` and where it came from."""

    path: str
    version: str   # its --version line, e.g. "bishengir-compile 1.2.0 (... 2026-07-29)"
    source: str    # "$PATH (CANN)", "ascendnpu-ir wheel" or "$MSE_GRAD_TRITON_BISHENGIR"


@dataclasses.dataclass
class Compiled:
    """One kernel compiled for one target."""

    status: str
    error: str = ""
    hivm: str = ""                    # the final HIVM (module.hivm.opt.mlir)
    planned_ub_bytes: int = 0         # the memory plan's extent (memory_info_aiv.json)
    required_ub_bytes: int = 0        # what an overflowing plan asked for
    compiler: str = ""                # Compiler.version


def path_env(toolchain: str) -> str:
    """The environment variable naming an explicit compiler for ``toolchain``."""
    return PATH_ENV if toolchain == "a2_a3" else f"{PATH_ENV}_{toolchain.upper()}"


@functools.cache
def find_compiler(toolchain: str = "a2_a3") -> Optional[Compiler]:
    """The compiler of ``toolchain`` (``chips.TOOLCHAINS``: ``bishengir-compile`` for A2/A3,
    ``bishengir-compile-a5`` for the 950 series): ``$MSE_GRAD_TRITON_BISHENGIR`` (for 950:
    ``..._910_95``), else CANN's on ``$PATH`` (an Atlas host), else the ``ascendnpu-ir``
    wheel's (x86_64 CPU hosts); None where there is none."""
    binary, env = chips.TOOLCHAINS[toolchain].compiler, path_env(toolchain)
    candidates = []
    if os.environ.get(env):
        candidates.append((os.environ[env], f"${env}"))
    if shutil.which(binary):
        candidates.append((shutil.which(binary), "$PATH (CANN)"))
    spec = importlib.util.find_spec("ascendnpuir")
    if spec is not None and spec.origin:
        candidates.append((str(Path(spec.origin).parent / "bin" / binary), "ascendnpu-ir wheel"))
    for path, source in candidates:
        if os.access(path, os.X_OK):
            try:
                run = subprocess.run([path, "--version"], capture_output=True, text=True,
                                     timeout=60)
            except (OSError, subprocess.SubprocessError):
                continue
            version = (run.stdout or run.stderr).strip().splitlines()
            if run.returncode == 0 and version:
                return Compiler(path, version[0].strip(), source)
    return None


@functools.cache
def _hivm_option(path: str) -> str:
    """triton-ascend's choice (``_check_bishengir_is_regbased``): a register-based compiler
    takes ``--reg-based=true``, the others ``--enable-hivm-compile=true``."""
    run = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=60)
    return "--reg-based=true" if "reg-based" in run.stdout else "--enable-hivm-compile=true"


def compile_options(compiler: Compiler, target: str, multibuffer: bool) -> List[str]:
    """The options triton-ascend 3.2.0 passes for ``target`` with a kernel's default metadata
    (no debug info, sanitizer or optional sync knobs): ``linalg_to_bin_enable_npu_compile_A2_A3``
    turns auto-bind-sub-block on and picks the HIVM option by the compiler; the 910_95 path
    (``..._910_95``) turns it off. Both ask for HFusion and Triton-kernel compilation."""
    if chips.chip(target).toolchain.compile_on_910_95:
        return [f"--target={target}", f"--enable-auto-multi-buffer={multibuffer}",
                "--enable-auto-bind-sub-block=False", "--enable-hfusion-compile=true",
                "--enable-triton-kernel-compile=true",
                "--enable-print-memory-allocated-size"]  # its plan's extent: no memory json
    return [f"--target={target}", f"--enable-auto-multi-buffer={multibuffer}",
            "--enable-auto-bind-sub-block=True", "--enable-hfusion-compile=true",
            _hivm_option(compiler.path), "--enable-triton-kernel-compile=true"]


def compile_linalg(linalg: str, target: str, multibuffer: bool,
                   compiler: Compiler, cache: Optional[Path] = None) -> Compiled:
    """Compile triton-adapter-opt's Linalg for ``target`` to the codegen boundary, as
    triton-ascend would (it strips ``, mix_mode = "aiv"`` first), with ``compiler`` (the
    target's toolchain's). Cached in ``cache`` by the compiler's version, the options and the
    Linalg's digest."""
    source = linalg.replace(', mix_mode = "aiv"', "")
    options = compile_options(compiler, target, multibuffer)
    path = cache / f"{_digest(compiler, options, source)}.json.gz" if cache else None
    if path is not None:
        try:
            return Compiled(**json.loads(gzip.decompress(path.read_bytes())))
        except (OSError, ValueError, TypeError, EOFError):  # not cached, or unreadable
            pass
    compiled = _compile(source, options, compiler)
    if path is not None:
        _store(path, json.dumps(dataclasses.asdict(compiled)))
    return compiled


def _digest(compiler: Compiler, options: List[str], source: str) -> str:
    """What a cached compile is keyed by: the compiler's version, its options, the Linalg."""
    return hashlib.sha256("\n".join([compiler.version, *options, source]).encode()).hexdigest()


def _store(path: Path, text: str) -> None:
    """Write a cache entry atomically: parallel workers may compile the same kernel and read
    each other's files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    partial.write_bytes(gzip.compress(text.encode()))
    os.replace(partial, path)


def planned_hivm(linalg: str, target: str, multibuffer: bool, compiler: Compiler,
                 cache: Optional[Path] = None) -> str:
    """The kernel's HIVM after memory planning, multi-buffering and sync insertion (printed
    before ``convert-hivm-to-std``), for ``hivm_exec``; cached like ``compile_linalg``."""
    from .hivm_exec import planned_from_log

    source = linalg.replace(', mix_mode = "aiv"', "")
    options = [*compile_options(compiler, target, multibuffer),
               "--mlir-print-ir-before=convert-hivm-to-std"]
    path = (cache / "bishengir-planned" / f"{_digest(compiler, options, source)}.mlir.gz"
            if cache else None)
    if path is not None and path.is_file():
        try:
            return gzip.decompress(path.read_bytes()).decode()
        except (OSError, EOFError):
            pass
    with tempfile.TemporaryDirectory(prefix="bishengir-") as folder:
        kernel = Path(folder) / "kernel.ttadapter.mlir"
        kernel.write_text(source)
        run = subprocess.run([compiler.path, str(kernel), *options, "-o",
                              str(Path(folder) / "kernel")], cwd=folder, capture_output=True,
                             text=True, timeout=600)
    try:
        planned = planned_from_log(run.stderr + run.stdout)
    except ValueError as error:   # no planned module: say what the compiler said instead
        raise type(error)(f"{error}: {_first_error(run.stderr + run.stdout)}") from None
    if path is not None:
        _store(path, planned)
    return planned


_REQUIRES = re.compile(r"ub overflow, requires (\d+) bits")
_ALLOCATED = re.compile(r"Allocated UB size = (\d+) bits")
# It got as far as a CPU host can go: A2/A3's and the 950's compiler say so differently.
_BOUNDARIES = ("External hivmc run fails", "Cannot find hivmc-a5")


def _compile(source: str, options: List[str], compiler: Compiler) -> Compiled:
    with tempfile.TemporaryDirectory(prefix="bishengir-") as folder:
        kernel = Path(folder) / "kernel.ttadapter.mlir"
        kernel.write_text(source)
        command = [compiler.path, str(kernel), *options, f"--save-temps={folder}",
                   "--enable-memory-display", "-o", str(Path(folder) / "kernel")]
        try:
            run = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                                 timeout=600)
        except subprocess.TimeoutExpired:
            return Compiled("error", "bishengir-compile ran over 600 s",
                            compiler=compiler.version)
        log = run.stdout + run.stderr
        planned = (planned_ub_bytes(_read_json(Path(folder) / "memory_info_aiv.json"))
                   or _allocated_ub_bytes(log))
        hivm_path = Path(folder) / "module.hivm.opt.mlir"
        hivm = hivm_path.read_text() if hivm_path.is_file() else ""
    return Compiled(status_of(log), "" if _at_boundary(log) else _first_error(log), hivm,
                    planned, _required_ub_bytes(log), compiler.version)


def planned_ub_bytes(memory: Optional[dict]) -> int:
    """The UB extent of the final memory plan in ``memory_info_aiv.json`` (each buffer: byte
    offsets, one per multi-buffer copy, and an extent in bits): the end of its last buffer."""
    if not memory or not memory.get("Record"):
        return 0
    buffers = memory["Record"][-1].get("memory_info_array", [])
    return max((offset + buffer["extent"] // 8 for buffer in buffers
                for offset in buffer["offset"]), default=0)


def status_of(log: str) -> str:
    """A compile's status (``STATUSES``) from the compiler's output."""
    if not _at_boundary(log):
        return "overflow" if _REQUIRES.search(log) else "error"
    if "set enable-auto-multi-buffer to false" in log:
        return "multibuffer dropped"
    if "set enable-code-motion to false" in log:
        return "code-motion retry"
    return "clean"


def _at_boundary(log: str) -> bool:
    return any(boundary in log for boundary in _BOUNDARIES)


def _allocated_ub_bytes(log: str) -> int:
    """The plan's extent as ``--enable-print-memory-allocated-size`` prints it (the last)."""
    found = _ALLOCATED.findall(log)
    return int(found[-1]) // 8 if found else 0


def _required_ub_bytes(log: str) -> int:
    match = _REQUIRES.search(log)
    return int(match.group(1)) // 8 if match else 0


def _first_error(log: str) -> str:
    for line in log.splitlines():
        if "error:" in line and "hivmc" not in line and "Failed to run" not in line \
                and "Cannot find" not in line:
            return line.split("error:", 1)[1].strip()[:300]
    lines = [line for line in log.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "bishengir-compile failed"


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
