"""What every command line shares (the tuner, the benchmark, the checks and the gates): its
options and how each is validated.

A bad argument is a usage error — one message naming the option, exit status 2, no
traceback — never a crash deep inside a run: sizes are positive element counts that the device
can hold, lists name members of their known sets, and a device that is absent says what is
present.
"""

import argparse
import os
from typing import Callable, Iterable, List, Optional, Tuple

import torch

from . import backends

# Memory a command needs per element at a size: the inputs, the result and a check's float64
# reference, in fp32 (the benchmark and the tuner both keep about this much alive).
BYTES_PER_ELEMENT = 40
_MAX_EXPONENT = 62  # 2^62 elements: past anything a device holds, within int64


def parse_size(text: str) -> int:
    """One element count: ``65536`` or ``2^16``; a positive integer."""
    text = text.strip()
    try:
        if text.startswith("2^"):
            exponent = int(text[2:])
            value = 2 ** exponent if 0 <= exponent <= _MAX_EXPONENT else 0
        else:
            value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= 2 ** _MAX_EXPONENT:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: an element count such as 65536 or 2^16, from 1 to "
            f"2^{_MAX_EXPONENT}")
    return value


def positive_int(text: str) -> int:
    """A positive integer (a count of jobs, say)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid count {text!r}: a positive integer")
    return value


def parse_sizes(text: str) -> List[int]:
    """Element counts from "2^16,2^20" or "65536,1048576" (each as ``parse_size``)."""
    return [parse_size(part) for part in text.split(",")]


def choice_list(choices: Iterable[str]) -> Callable[[str], List[str]]:
    """An option type: a comma-separated list of members of ``choices``, in the order given."""
    known = tuple(choices)

    def parse(text: str) -> List[str]:
        items = [item.strip() for item in text.split(",")]
        unknown = [item for item in items if item not in known]
        if unknown or not items:
            raise argparse.ArgumentTypeError(
                f"invalid choice {', '.join(map(repr, unknown or [text]))} (choose from "
                f"{', '.join(known)}, comma-separated)")
        return items

    parse.__name__ = "list"  # argparse names the type in its own messages
    return parse


def parse_shape_2d(text: str) -> Tuple[int, int]:
    """``ROWSxCOLS``, each a positive integer."""
    parts = text.lower().split("x")
    try:
        rows, cols = (int(part) for part in parts)
    except ValueError:
        rows = cols = 0
    if rows <= 0 or cols <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: ROWSxCOLS, e.g. 1024x4097")
    return rows, cols


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--device`` option every command line shares; ``device_from`` reads it."""
    parser.add_argument("--device", default=None,
                        help="npu, cuda or cpu, with an index or not (default: the best present)")


def device_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> torch.device:
    """The device a command line asked for, or the best present. One line and exit status 2
    when it is not here: what was asked, what is present."""
    if args.device is None:
        return backends.default_device()
    device, why = _device_if_present(args.device)
    if device is None:
        parser.exit(2, f"{parser.prog}: error: --device {args.device}: {why}; present: "
                       f"{', '.join(present_devices())}\n")
    return device


def present_devices() -> List[str]:
    """The devices this machine has that the kernel runs on."""
    present = [f"cuda:{i}" for i in range(torch.cuda.device_count())] \
        if torch.cuda.is_available() else []
    if _torch_npu() and torch.npu.is_available():
        present += [f"npu:{i}" for i in range(torch.npu.device_count())]
    return present + ["cpu"]


def _device_if_present(name: str) -> Tuple[Optional[torch.device], str]:
    kind = name.split(":")[0]
    if kind == "npu" and not _torch_npu():
        return None, "torch_npu is not installed"
    try:
        device = torch.device(name)
    except RuntimeError:
        return None, "not a device name (npu, cuda or cpu, e.g. cuda:0)"
    if device.type not in backends.SUPPORTS_FP64:
        return None, f"the kernel does not run on {device.type} devices"
    if device.type == "cpu":
        return (device, "") if device.index in (None, 0) else (None, "there is one CPU device")
    module = getattr(torch, device.type)
    count = module.device_count() if module.is_available() else 0
    if count == 0:
        return None, f"no {device.type} device here"
    if (device.index or 0) >= count:
        return None, f"there {'is' if count == 1 else 'are'} {count} {device.type} device(s)"
    return device, ""


def _torch_npu() -> bool:
    try:
        import torch_npu  # noqa: F401  (registers torch.npu)
    except ImportError:
        return False
    return True


def free_bytes(device: torch.device) -> int:
    """Memory free on ``device`` now (the host's available memory for the CPU)."""
    if device.type == "cpu":
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return getattr(torch, device.type).mem_get_info(device)[0]


def check_sizes_fit(parser: argparse.ArgumentParser, option: str, sizes: Iterable[int],
                    device: torch.device) -> None:
    """A usage error where a size needs more memory than ``device`` has free."""
    free = free_bytes(device)
    for size in sizes:
        if size * BYTES_PER_ELEMENT > free:
            parser.error(f"{option} {size}: {size} elements need about "
                         f"{_gib(size * BYTES_PER_ELEMENT)} on {device}, which has "
                         f"{_gib(free)} free")


def _gib(count: int) -> str:
    return f"{count / 2**30:.3g} GiB"
