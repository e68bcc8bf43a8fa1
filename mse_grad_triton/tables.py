"""Tuned tables: ``<device>.json`` files written by the tuner, found, validated, cached, and
consulted per call.

Lookup order for a device: the user folder's ``<device>.json`` (``$MSE_GRAD_TRITON_TUNE_DIR``;
with tuning on first use, else the cache's: ``autotune.user_dir``), then the shipped
``mse_grad_triton/tune_configs/<device>.json``, then none (the built-in defaults of
``configs.py`` apply). A table is read once per process; a missing (in the user's folder),
unreadable or malformed one gives one warning naming the file, and the next source is used.
Per call, a lookup is a dict access plus a bisection over a handful of size buckets.
"""

import bisect
import json
import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import generation
from .configs import MAX_BLOCK_SIZE, TABLE_FIELDS, KernelConfig
from .validation import DTYPES_BY_NAME

FORMAT = 1
TUNE_DIR_ENV = "MSE_GRAD_TRITON_TUNE_DIR"
PATHS = ("flat", "flat_scalar_grad", "strided", "transposed")
# The dtypes a table covers: every supported one but float64 (no NPU computes it).
DTYPE_NAMES = tuple(name for name in DTYPES_BY_NAME if name != "float64")
_CONFIG_FIELDS = set(TABLE_FIELDS)


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


# A table is a few KB; anything this large is not one (and is not read).
MAX_TABLE_BYTES = 1 << 20
_MAX_COUNT = 1 << 62  # element counts: non-negative ints below this


def _count(value, what: str, minimum: int) -> int:
    """A non-negative (or >= ``minimum``) int of sane size, not a bool."""
    if type(value) is not int or not minimum <= value < _MAX_COUNT:
        raise ValueError(f"{what} must be an integer in [{minimum}, 2**62), got {value!r}")
    return value


def _config(fields, where: str) -> KernelConfig:
    """A ``KernelConfig`` from a table entry's ``config``, every field checked."""
    if not isinstance(fields, dict) or not set(fields) <= _CONFIG_FIELDS \
            or "block_size" not in fields:
        raise ValueError(f"{where}: config must be an object with block_size and only "
                         f"{sorted(_CONFIG_FIELDS)}")
    block = _count(fields["block_size"], f"{where}: block_size", 1)
    if block & (block - 1) or block > MAX_BLOCK_SIZE:
        raise ValueError(f"{where}: block_size must be a power of two <= {MAX_BLOCK_SIZE}")
    programs = _count(fields.get("programs_per_unit", 1), f"{where}: programs_per_unit", 1)
    if programs > 1024:
        raise ValueError(f"{where}: programs_per_unit must be at most 1024")
    warps = fields.get("num_warps", 4)
    if warps not in (1, 2, 4, 8, 16, 32) or type(warps) is not int:
        raise ValueError(f"{where}: num_warps must be a power of two from 1 to 32")
    multibuffer, transpose = fields.get("multibuffer", True), fields.get("transpose", True)
    if type(multibuffer) is not bool or type(transpose) is not bool:
        raise ValueError(f"{where}: multibuffer and transpose must be true or false")
    return KernelConfig(block, programs, warps, multibuffer, transpose, source=where)


def _first_use_note(tuned) -> str:
    """How a first-use entry says where it came from (``autotune``), for ``explain()``."""
    if not isinstance(tuned, dict) or tuned.get("how") != "first use":
        return ""
    return f" (tuned on first use, {tuned.get('date')}, {tuned.get('candidates')} candidates)"


def read_table_text(path: Path) -> str:
    """The text of a table file: a regular file (not a FIFO, device or directory, which could
    block or never end) of at most ``MAX_TABLE_BYTES``."""
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ValueError("not a regular file")
        data = handle.read(MAX_TABLE_BYTES + 1)
    if len(data) > MAX_TABLE_BYTES:
        raise ValueError(f"larger than {MAX_TABLE_BYTES} bytes")
    return data.decode("utf-8")


def parse_table(path: Path, device: str) -> TunedTable:
    """Read and validate ``path``; ``ValueError`` (or ``OSError``) says what is wrong with it."""
    try:
        data = json.loads(read_table_text(path))
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"not a format-{FORMAT} tuned table")
    if data.get("device") != device:
        raise ValueError(f"it is for device {data.get('device')!r}, not {device!r}")
    entries = data.get("entries")
    if not isinstance(entries, list):
        raise ValueError("entries must be a list (of measured configurations)")
    buckets: Dict[Tuple[str, str], List[Tuple[float, KernelConfig]]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {i} must be an object")
        dtype, launch_path = entry.get("dtype"), entry.get("path")
        if dtype not in DTYPE_NAMES or launch_path not in PATHS:
            raise ValueError(f"entry {i}: unknown dtype or path ({dtype!r}, {launch_path!r})")
        numel = _count(entry.get("numel"), f"entry {i}: numel", 1)
        config = _config(entry.get("config"), f"{path} [{dtype} {launch_path} {numel}]"
                         + _first_use_note(entry.get("tuned")))
        buckets.setdefault((dtype, launch_path), []).append((math.log2(numel), config))
    native_below = data.get("native_below", {})
    if not isinstance(native_below, dict) or not set(native_below) <= set(DTYPE_NAMES):
        raise ValueError(f"native_below must map dtype names ({', '.join(DTYPE_NAMES)}) to "
                         "element counts")
    native_below = {k: _count(v, f"native_below[{k!r}]", 0) for k, v in native_below.items()}
    return TunedTable(str(path), device,
                      {key: ([k for k, _ in sorted(v, key=lambda e: e[0])],
                             [c for _, c in sorted(v, key=lambda e: e[0])])
                       for key, v in buckets.items()},
                      native_below)


_tables: Dict[str, Optional[TunedTable]] = {}
_lock = threading.Lock()


def table_for(device: str) -> Optional[TunedTable]:
    """The tuned table for a (normalised) device name, loaded once; ``None`` if there is none.
    Files are read outside the lock: a slow file system blocks no other thread's lookups."""
    try:
        return _tables[device]
    except KeyError:
        pass
    table, problems = _load_first(device)
    with _lock:
        if device not in _tables:  # the first thread to finish loading wins, and warns
            _tables[device] = table
            for problem in problems:
                warnings.warn(problem, stacklevel=3)
    return _tables[device]


def ignore(device: str) -> None:
    """Act as if ``device`` had no table until ``clear_cache`` (the tuner measures the built-in
    defaults)."""
    with _lock:
        _tables[device] = None
    generation.bump()


def clear_cache() -> None:
    """Forget loaded tables (after writing one, or changing $MSE_GRAD_TRITON_TUNE_DIR)."""
    with _lock:
        _tables.clear()
    generation.bump()


def _load_first(device: str) -> Tuple[Optional[TunedTable], List[str]]:
    """The first usable table for ``device`` and a warning for each unusable one before it.
    Nothing in a file's content can raise from here."""
    from . import autotune  # the user folder depends on whether tuning on first use is on

    folder = autotune.user_dir()
    # A missing table in a named folder is worth a warning, unless first use will write it.
    named = bool(os.environ.get(TUNE_DIR_ENV)) and not autotune.enabled()
    candidates = [(folder / f"{device}.json", named)] if folder else []
    candidates.append((shipped_dir() / f"{device}.json", False))
    problems = []
    for path, warn_if_missing in candidates:
        if not os.path.lexists(path):
            if warn_if_missing:
                problems.append(f"mse_grad_triton: no tuned table {path} (from {TUNE_DIR_ENV});"
                                " using the next source")
            continue
        try:
            return parse_table(path, device), problems
        except Exception as error:  # any content, any file: one warning, then the next source
            problems.append(f"mse_grad_triton: ignoring tuned table {path}: "
                            f"{type(error).__name__}: {error}")
    return None, problems
