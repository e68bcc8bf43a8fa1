"""Tuned tables: ``<device>.json`` files written by the tuner, found, validated, cached, and
consulted per call.

Lookup order for a device: ``$MSE_GRAD_TRITON_TUNE_DIR/<device>.json``, then the shipped
``mse_grad_triton/tune_configs/<device>.json``, then none (the built-in defaults of
``configs.py`` apply). A table is read once per process; a missing (in the user's folder),
unreadable or malformed one gives one warning naming the file, and the next source is used.
Per call, a lookup is a dict access plus a bisection over a handful of size buckets.
"""

import bisect
import json
import math
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .configs import KernelConfig

FORMAT = 1
TUNE_DIR_ENV = "MSE_GRAD_TRITON_TUNE_DIR"
PATHS = ("flat", "flat_scalar_grad", "strided")
DTYPE_NAMES = ("float32", "float16", "bfloat16")
_CONFIG_FIELDS = {"block_size", "programs_per_unit", "num_warps", "multibuffer"}


@dataclass(frozen=True)
class TunedTable:
    """A validated table for one device."""

    file: str
    device: str
    # (dtype, path) -> (log2 of each size bucket, ascending; the config tuned for each)
    buckets: Dict[Tuple[str, str], Tuple[List[float], List[KernelConfig]]]
    native_below: Dict[str, int]  # dtype -> numel below which the native op is faster

    def config_for(self, dtype: str, path: str, numel: int) -> Optional[KernelConfig]:
        """The config of the nearest size bucket (in log2) for dtype and path, if any."""
        entry = self.buckets.get((dtype, path))
        if entry is None:
            return None
        keys, configs = entry
        x = math.log2(max(numel, 1))
        i = bisect.bisect_left(keys, x)
        if i == len(keys) or (i > 0 and x - keys[i - 1] <= keys[i] - x):
            i -= 1
        return configs[i]


def shipped_dir() -> Path:
    """The ``tune_configs`` folder installed with the package."""
    from importlib.resources import files

    return Path(str(files("mse_grad_triton.tune_configs")))


def parse_table(path: Path, device: str) -> TunedTable:
    """Read and validate ``path``; ``ValueError`` says what is wrong with it."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} tuned table")
    if data.get("device") != device:
        raise ValueError(f"it is for device {data.get('device')!r}, not {device!r}")
    buckets: Dict[Tuple[str, str], List[Tuple[float, KernelConfig]]] = {}
    for i, entry in enumerate(data["entries"]):
        dtype, launch_path, numel = entry["dtype"], entry["path"], entry["numel"]
        fields = entry["config"]
        if dtype not in DTYPE_NAMES or launch_path not in PATHS:
            raise ValueError(f"entry {i}: unknown dtype or path ({dtype!r}, {launch_path!r})")
        if not isinstance(numel, int) or numel < 1 or set(fields) - _CONFIG_FIELDS:
            raise ValueError(f"entry {i}: bad numel or config fields")
        block = fields["block_size"]
        if not isinstance(block, int) or block < 1 or block & (block - 1):
            raise ValueError(f"entry {i}: block_size must be a power of two")
        config = KernelConfig(**fields, source=f"{path} [{dtype} {launch_path} {numel}]")
        buckets.setdefault((dtype, launch_path), []).append((math.log2(numel), config))
    native_below = {str(k): int(v) for k, v in data.get("native_below", {}).items()}
    return TunedTable(str(path), device,
                      {key: ([k for k, _ in sorted(v, key=lambda e: e[0])],
                             [c for _, c in sorted(v, key=lambda e: e[0])])
                       for key, v in buckets.items()},
                      native_below)


_tables: Dict[str, Optional[TunedTable]] = {}
_lock = threading.Lock()
# Bumped whenever the tables in force may change, so that cached launch plans are dropped.
generation = 0


def table_for(device: str) -> Optional[TunedTable]:
    """The tuned table for a (normalised) device name, loaded once; ``None`` if there is none."""
    try:
        return _tables[device]
    except KeyError:
        pass
    with _lock:
        if device not in _tables:
            _tables[device] = _load_first(device)
    return _tables[device]


def ignore(device: str) -> None:
    """Act as if ``device`` had no table until ``clear_cache`` (the tuner measures the built-in
    defaults)."""
    global generation
    with _lock:
        _tables[device] = None
        generation += 1


def clear_cache() -> None:
    """Forget loaded tables (after writing one, or changing $MSE_GRAD_TRITON_TUNE_DIR)."""
    global generation
    with _lock:
        _tables.clear()
        generation += 1


def _load_first(device: str) -> Optional[TunedTable]:
    user_dir = os.environ.get(TUNE_DIR_ENV)
    candidates = [(Path(user_dir) / f"{device}.json", True)] if user_dir else []
    candidates.append((shipped_dir() / f"{device}.json", False))
    for path, warn_if_missing in candidates:
        if not path.exists():
            if warn_if_missing:
                warnings.warn(f"mse_grad_triton: no tuned table {path} (from {TUNE_DIR_ENV}); "
                              "using the next source", stacklevel=4)
            continue
        try:
            return parse_table(path, device)
        except (OSError, ValueError, KeyError, TypeError) as error:
            warnings.warn(f"mse_grad_triton: ignoring tuned table {path}: {error}",
                          stacklevel=4)
    return None
