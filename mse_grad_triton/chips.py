"""Ascend chip facts, as data (``chips.json``): per chip name its series, vector cores, UB size
and alignment, and its toolchain (which triton-ascend compile path and bishengir binary build
for it, and whether multibuffer is on by default there).

The numbers are bishengir-compile's own target spec; ``./run ascend-check`` compares them with
the spec of every target it compiles for. The launcher reads a chip's facts by the name
torch_npu reports (``DeviceBackend.device_name``); an unknown name gives one warning and the
facts of the known chip whose name is nearest (the longest common prefix: the same series).

    chip(name) -> Chip            facts for a chip name (cached)
    known() -> {name: Chip}       every chip in the data
    TOOLCHAINS                    toolchain name -> Toolchain
"""

import dataclasses
import functools
import json
import os
import threading
import warnings
from pathlib import Path
from typing import Dict

CHIPS_FILE = Path(__file__).resolve().parent / "chips.json"


@dataclasses.dataclass(frozen=True)
class Toolchain:
    """How triton-ascend builds for a family of chips."""

    name: str                 # "a2_a3" or "910_95"
    compiler: str             # the bishengir binary: bishengir-compile, bishengir-compile-a5
    lowering: str             # triton-ascend 3.2.0's compile function for it
    compile_on_910_95: bool   # triton-ascend's NPUOptions.compile_on_910_95
    multibuffer_default: bool


@dataclasses.dataclass(frozen=True)
class Chip:
    """One Ascend chip's facts."""

    name: str
    series: str               # "A2", "A3", "950"
    toolchain: Toolchain
    ai_cores: int
    vector_cores: int
    ub_bytes: int
    ub_align_bytes: int       # a UB row narrower than this is padded to it
    known: bool = True        # False: an unknown name with its nearest known chip's facts


def _data() -> dict:
    return json.loads(CHIPS_FILE.read_text())


@functools.cache
def _toolchains() -> Dict[str, Toolchain]:
    return {name: Toolchain(name, **facts) for name, facts in _data()["toolchains"].items()}


@functools.cache
def known() -> Dict[str, Chip]:
    """Every chip of ``chips.json``, by name."""
    toolchains = _toolchains()
    return {name: Chip(name, facts["series"], toolchains[facts["toolchain"]],
                       facts["ai_cores"], facts["vector_cores"], facts["ub_bytes"],
                       facts["ub_align_bytes"])
            for name, facts in _data()["chips"].items()}


TOOLCHAINS = _toolchains()
_warned = set()
_lock = threading.Lock()


def chip(name: str) -> Chip:
    """The facts for chip ``name`` (as torch_npu reports it, e.g. ``Ascend910B3``); an unknown
    name warns once and gets the facts of the known chip with the longest common name prefix
    (``known=False``)."""
    chips = known()
    if name in chips:
        return chips[name]
    nearest = max(chips.values(), key=lambda c: len(os.path.commonprefix([c.name, name])))
    with _lock:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(f"mse_grad_triton: {name!r} is not an Ascend chip this package knows "
                          f"({CHIPS_FILE.name}); using the facts of {nearest.name} "
                          f"({nearest.series}: UB {nearest.ub_bytes} B, toolchain "
                          f"{nearest.toolchain.name}). Check it: ./run ascend-check --targets "
                          f"{name} (README, New Atlas chip)", stacklevel=3)
    return dataclasses.replace(nearest, name=name, known=False)


def targets(toolchain: str) -> Dict[str, Chip]:
    """The known chips that ``toolchain`` builds for."""
    return {name: c for name, c in known().items() if c.toolchain.name == toolchain}
