"""The reduction: its codes and names, and the scale of the gradient it implies.

The one definition every module imports: the launcher, the PyTorch layer, the reference in
``testing``, the benchmark and the tools.
"""

import enum
from typing import Union


class Reduction(enum.IntEnum):
    """``torch.nn._reduction.get_enum``'s codes, as ``aten::mse_loss_backward`` and
    ``aclnnMseLossBackward`` take them."""

    NONE = 0
    MEAN = 1
    SUM = 2


def parse_reduction(reduction: Union[int, str]) -> Reduction:
    """The reduction from torch's code or its name (``"none"``, ``"mean"``, ``"sum"``);
    ``ValueError`` otherwise. ATen treats any other integer as ``sum``; aclnn refuses it, and
    so do we."""
    known = _BY_CODE.get(reduction) if type(reduction) in (int, Reduction) else None
    if known is not None:  # the common case first: every call under enable() checks
        return known
    if isinstance(reduction, str) and reduction.upper() in Reduction.__members__ \
            and reduction.islower():
        return Reduction[reduction.upper()]
    raise ValueError(
        f"reduction must be 0, 1, 2 or one of 'none', 'mean', 'sum'; got {reduction!r}"
    )


_BY_CODE = {int(code): code for code in Reduction}


def gradient_scale(reduction: int, numel_self: int) -> float:
    """The factor of ``grad_output * (self - target)``: ``2 / self.numel()`` for mean (the
    element count of ``self``, not of the broadcast result), ``2`` for none and sum."""
    return 2.0 / numel_self if reduction == Reduction.MEAN else 2.0


def scale_divisor(reduction: int, numel_self: int) -> int:
    """The divisor of ``2`` in ``gradient_scale``: float64 kernels recompute the scale from it
    (Triton passes Python floats as fp32)."""
    return numel_self if reduction == Reduction.MEAN else 1
