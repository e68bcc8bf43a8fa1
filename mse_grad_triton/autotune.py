"""Tuning on first use (opt-in), and the locked store of tuned tables both tuners write through.

Opt in with ``MSE_GRAD_TRITON_AUTOTUNE=1`` or ``mse_grad_triton.tune_on_first_use()``. Then the
first call whose (device, dtype, launch path, size bucket) has no entry in the device's tuned
table tunes it, on tensors of the call's own shapes, strides and dtypes (never the caller's):
the candidates of ``configs.candidate_configs`` (on NPU, where the pipe model can rank them,
only the best few by the model), each checked against float64 and timed with the device's
kernel timer (``do_bench_npu`` / ``triton.testing.do_bench``). The fastest goes into
``<user dir>/<device>.json`` (``$MSE_GRAD_TRITON_TUNE_DIR``, else
``$MSE_GRAD_TRITON_CACHE_DIR/tuned``, default ``~/.cache/mse_grad_triton/tuned``), written
atomically with the versions, the date and the measurement; every later call and process that
reads that folder uses it.

Processes sharing the folder tune each entry once: the tuner holds a lock file for the entry
(``fcntl.flock``; the OS releases it if the process dies) and the others wait for its result,
at most ``$MSE_GRAD_TRITON_TUNE_WAIT`` seconds (default 600), then use the default config. The
table is merged and replaced under a second lock, so no result is lost and no reader sees a
partial file. A file that is not a valid table for the device is moved aside (``.corrupt``)
with one warning.

Nothing is tuned while ``torch.compile`` or ``torch.jit`` traces, under a ``torch.func``
transform, on fake tensors, or while a CUDA/NPU stream is being captured: those calls run the
default config, and the call is planned again, and tuned, outside.
"""

import contextlib
import datetime
import fcntl
import json
import math
import os
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import torch

from . import generation, tables

ENABLE_ENV = "MSE_GRAD_TRITON_AUTOTUNE"
WAIT_ENV = "MSE_GRAD_TRITON_TUNE_WAIT"
CACHE_DIR_ENV = "MSE_GRAD_TRITON_CACHE_DIR"
DEFAULT_WAIT_SECONDS = 600.0
MODEL_BEST = 3   # candidates measured besides the default where the pipe model ranks them

_requested: Optional[bool] = None   # tune_on_first_use(); None: the environment decides
_state = threading.local()          # .reason: why this thread must not tune now, or None
TUNING = "a tuning run is in progress"


def tune_on_first_use(enabled: Optional[bool] = True) -> None:
    """Tune each (device, dtype, path, size bucket) the first time a call needs it (see the
    module docstring); ``False`` turns it off whatever the environment says, ``None`` leaves
    it to ``$MSE_GRAD_TRITON_AUTOTUNE`` again."""
    global _requested
    _requested = None if enabled is None else bool(enabled)
    tables.clear_cache()   # the user folder is read, or no longer read, from now on


def enabled() -> bool:
    """Is tuning on first use on (``tune_on_first_use``, else ``$MSE_GRAD_TRITON_AUTOTUNE``)?"""
    if _requested is not None:
        return _requested
    return os.environ.get(ENABLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def user_dir() -> Optional[Path]:
    """Where tuned tables are read first: ``$MSE_GRAD_TRITON_TUNE_DIR``; else, with tuning on
    first use on, ``tuning_dir()``; else None."""
    if os.environ.get(tables.TUNE_DIR_ENV) or enabled():
        return tuning_dir()
    return None


def tuning_dir() -> Path:
    """Where tuned entries are written (first use, ``mse-grad-triton-tune --user-dir``):
    ``$MSE_GRAD_TRITON_TUNE_DIR``, else ``$MSE_GRAD_TRITON_CACHE_DIR/tuned`` (default
    ``~/.cache/mse_grad_triton/tuned``)."""
    named = os.environ.get(tables.TUNE_DIR_ENV)
    if named:
        return Path(named)
    root = os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "mse_grad_triton"
    return Path(root) / "tuned"


def size_bucket(numel: int) -> int:
    """The size bucket of a call of ``numel`` elements: a power of 4 (the offline tuner's
    default sizes, 2^12 ... 2^26 in steps of 4x, have one each)."""
    return _bucket(math.log2(max(numel, 1)))


def _bucket(log2_numel: float) -> int:
    return int(log2_numel) // 2


def covered(table: Optional[tables.TunedTable], dtype: str, path: str, numel: int) -> bool:
    """Does ``table`` have an entry for this dtype, path and size bucket?"""
    if table is None:
        return False
    keys = table.buckets.get((dtype, path), ((), ()))[0]
    return any(_bucket(key) == size_bucket(numel) for key in keys)  # keys: log2 of numel


@contextlib.contextmanager
def deferred(reason: str) -> Iterator[None]:
    """No tuning in this thread inside the block (``reason`` says why: ``explain()`` runs
    nothing; a tuning run's own candidates)."""
    previous = getattr(_state, "reason", None)
    _state.reason = reason
    try:
        yield
    finally:
        _state.reason = previous


def why_not_now(device: torch.device, tensors: Sequence) -> Optional[str]:
    """Why a call must not be tuned now (``deferred``, tracing, a transform, a capture), or
    None."""
    if getattr(_state, "reason", None):
        return _state.reason
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    if torch.jit.is_tracing() or compiling():
        return "torch.compile or torch.jit is tracing"
    transforms = getattr(torch._C._functorch, "peek_interpreter_stack", lambda: None)
    if transforms() is not None:
        return "a torch.func transform is active"
    from torch._subclasses.fake_tensor import FakeTensor

    if any(isinstance(t, FakeTensor) for t in tensors):
        return "fake tensors"
    if device.type in ("cuda", "npu"):
        module = getattr(torch, device.type)
        if module.is_current_stream_capturing():
            return f"a {device.type.upper()} stream is being captured"
    return None


def wanted(table, dtype: str, path: str, numel: int) -> bool:
    """Is tuning on first use on, and the call's entry missing from ``table``?"""
    return enabled() and not covered(table, dtype, path, numel)


# --- tuning one entry ---------------------------------------------------------------------

def tune_call(device_backend, operands, reduction_code: int, dtype: str, path: str):
    """Tune the entry of a call with ``operands`` (grad_output, self, target, out: tensors or
    their metadata) and return its config, or None (another process's wait ran out, or
    every candidate failed: the default config then)."""
    directory = tuning_dir()
    device = torch.device(operands[1].device)
    name = device_backend.device_name
    numel = math.prod(operands[3].shape)
    with _entry_lock(directory, name, dtype, path, numel) as mine:
        if not mine:
            warnings.warn(f"mse_grad_triton: waited {wait_seconds():g} s for another process "
                          f"to tune {dtype} {path} 2^{size_bucket(numel) * 2} on {name}; using "
                          "the default config", stacklevel=4)
            return None
        if covered(_on_disk(directory, name), dtype, path, numel):  # another process's
            tables.clear_cache()
            table = tables.table_for(name)
            return table.config_for(dtype, path, numel) if table else None
        entry = _measure_entry(device_backend, device, operands, reduction_code, dtype, path)
        if entry is None:
            return None
        from .tune import provenance

        written = store(directory, name, [entry], provenance(device, device_backend))
        print(f"mse_grad_triton: tuned {dtype} {path} {numel} on {name} over "
              f"{entry['tuned']['candidates']} candidates in {entry['tuned']['wall_seconds']:.1f}"
              f" s: block {entry['config']['block_size']} x{entry['config']['programs_per_unit']}"
              f", {entry['seconds'] * 1e6:.1f} us ({entry['vs_default']:.2f}x the default) "
              f"-> {written}", file=sys.stderr)
    tables.clear_cache()
    table = tables.table_for(name)
    return table.config_for(dtype, path, numel) if table else None


def _on_disk(directory: Path, device: str) -> Optional[tables.TunedTable]:
    """The table in ``directory`` as it is now (not the cached one), if it is valid."""
    try:
        return tables.parse_table(directory / f"{device}.json", device)
    except Exception:  # missing or invalid: the tables module warns when it loads it
        return None


def _measure_entry(device_backend, device, operands, reduction_code, dtype, path
                   ) -> Optional[dict]:
    """Every candidate (or, on NPU with the pipe model, the best few) measured on fresh
    tensors of the call's geometry: the table entry, or None where none works."""
    from tqdm import tqdm

    from . import tune
    from .testing import make_like
    from .timing import device_timer

    started = time.perf_counter()
    tensors = tuple(make_like(t, seed, device) for seed, t in enumerate(operands[:3]))
    out = torch.empty_strided(tuple(operands[3].shape), tuple(operands[3].stride()),
                              dtype=operands[3].dtype, device=device)
    work = (*tensors, out)
    with deferred(TUNING):
        candidates, _ = tune._candidates(work, device_backend)
        ranking = _ranking(device_backend)
        chosen = candidates
        if ranking is not None:
            modelled = tune._rank(work, candidates, ranking)
            order = sorted(range(1, len(candidates)), key=lambda i: modelled[i][0])
            chosen = [candidates[0]] + [candidates[i] for i in order[:ranking.best]]
        timer = device_timer(device)
        records = []
        label = f"mse_grad_triton: tuning {dtype} {path} {math.prod(out.shape)}"
        for config in tqdm(chosen, desc=label, unit="config", file=sys.stderr,
                           disable=not sys.stderr.isatty(), leave=False):
            records.append(tune._measure(work, device_backend, config, timer,
                                         reduction_code))
    passed = [r for r in records if "seconds" in r]
    if not passed:
        warnings.warn(f"mse_grad_triton: no candidate works for {label}: "
                      f"{[r.get('failed') for r in records]}; using the default config",
                      stacklevel=5)
        return None
    best = min(passed, key=lambda r: r["seconds"])
    default = records[0].get("seconds")
    return {"dtype": dtype, "path": path, "numel": math.prod(out.shape),
            "config": best["config"], "seconds": best["seconds"],
            "default_seconds": default,
            "vs_default": default / best["seconds"] if default else 1.0,
            "tuned": {"how": "first use", "date": _now(), "candidates": len(chosen),
                      "wall_seconds": time.perf_counter() - started,
                      "ranked_by_model": ranking is not None},
            "candidates": records}


def _ranking(device_backend):
    """The pipe-model ranking for an NPU whose chip the model covers, with a compiler."""
    if device_backend.kind != "npu":
        return None
    from .tools import bishengir, pipe_model
    from .tune import ModelRanking

    if device_backend.device_name not in pipe_model.MODELLED_CHIPS \
            or bishengir.find_compiler() is None:
        return None
    return ModelRanking(device_backend.device_name, MODEL_BEST)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# --- the locked store ---------------------------------------------------------------------

def wait_seconds() -> float:
    """How long a process waits for another's tuning of the same entry."""
    try:
        return max(0.0, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)))
    except ValueError:
        return DEFAULT_WAIT_SECONDS


@contextlib.contextmanager
def _flock(path: Path, timeout: Optional[float]) -> Iterator[bool]:
    """Hold an exclusive lock on ``path`` (created); yields whether it was taken within
    ``timeout`` seconds (None: wait as long as it takes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | (fcntl.LOCK_NB if timeout is not None
                                                     else 0))
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _entry_lock(directory: Path, device: str, dtype: str, path: str, numel: int):
    """The lock of one table entry (the process holding it tunes it)."""
    name = f"{device}.{dtype}.{path}.{size_bucket(numel)}.lock"
    return _flock(directory / ".locks" / name, wait_seconds())


def store(directory: Path, device: str, entries: List[dict], provenance: dict,
          native_below: Optional[Dict[str, int]] = None) -> Path:
    """Merge ``entries`` (and per-dtype crossovers) into ``<directory>/<device>.json`` (an
    entry replaces the one of its dtype, path and size bucket), atomically and under the
    table's lock. A file there that is not a valid table for ``device`` is moved aside to
    ``.corrupt``, with a warning."""
    target = directory / f"{device}.json"
    with _flock(directory / ".locks" / f"{device}.json.lock", None):
        existing = _readable(target, device)
        kept = [e for e in existing.get("entries", [])
                if not any((e["dtype"], e["path"], size_bucket(e["numel"])) ==
                           (n["dtype"], n["path"], size_bucket(n["numel"])) for n in entries)]
        table = {"format": tables.FORMAT, "device": device,
                 "provenance": {**existing.get("provenance", {}), **provenance},
                 "native_below": {**existing.get("native_below", {}), **(native_below or {})},
                 "entries": kept + entries}
        partial = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(table, indent=1) + "\n")
        os.replace(partial, target)
    tables.clear_cache()
    return target


def _readable(path: Path, device: str) -> Dict:
    """The table at ``path`` as data if it is a valid one for ``device``; else {} (a bad file
    moved aside to ``.corrupt``, with a warning)."""
    if not path.exists():
        return {}
    try:
        tables.parse_table(path, device)
        return json.loads(path.read_text())
    except Exception as error:  # any content: moved aside, never lost or trusted
        aside = path.with_name(path.name + ".corrupt")
        os.replace(path, aside)
        warnings.warn(f"mse_grad_triton: {path} is not a tuned table for {device} "
                      f"({type(error).__name__}: {error}); moved it to {aside}", stacklevel=4)
        generation.bump()
        return {}
