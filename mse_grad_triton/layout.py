"""Layout analysis: broadcasting, dimension ordering and coalescing.

Turns the four operands (grad_output, self, target, out) into the kernel's iteration space:
rows of the innermost coalesced dimension, with per-operand strides (0 where an operand is
broadcast), so that no input is ever copied. The algorithm is PyTorch's TensorIterator's:
drop size-1 dimensions, order dimensions by stride (the output's first), then merge
neighbours that every operand walks as one.

Pure Python over shapes and strides: no tensor is created, nothing touches a device.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

from .kernels import COL_VECTOR, MAX_OUTER_DIMS, ROW_VECTOR, SCALAR, TILE, TRANSPOSED

Shape = Tuple[int, ...]

# The longest rows the flat kernel repeats a per-row input over (three interleaves on chip:
# rows of 8 16-bit elements are the widest narrower than a 32-byte UB block).
MAX_EXPANDED_ROW = 8

# Operand order everywhere below (and in the kernel's argument list).
OPERANDS = ("grad_output", "self", "target", "out")
GRAD, SELF, TARGET, OUT = range(4)
# Dimension ordering asks the output first: a freshly allocated output is then written in
# order, and a strided ``out`` is walked in its own memory order.
_ORDER_PRIORITY = (OUT, SELF, TARGET, GRAD)


def broadcast_shapes(shapes: Sequence[Shape], names: Sequence[str]) -> Shape:
    """NumPy broadcasting of ``shapes``; a ``ValueError`` names the first that does not fit."""
    longest = max(shapes, key=len)
    if all(shape == longest or not shape for shape in shapes):  # the usual case, quickly
        return tuple(longest)
    result: Shape = ()
    for shape, name in zip(shapes, names):
        rank = max(len(result), len(shape))
        padded_result = (1,) * (rank - len(result)) + result
        padded = (1,) * (rank - len(shape)) + tuple(shape)
        merged = []
        for have, new in zip(padded_result, padded):
            if have != new and have != 1 and new != 1:
                raise ValueError(
                    f"{name} of shape {list(shape)} does not broadcast with "
                    f"{list(result)}, the broadcast shape of the arguments before it"
                )
            merged.append(new if have == 1 else have)
        result = tuple(merged)
    return result


def broadcast_strides(shape: Shape, strides: Sequence[int], out_shape: Shape) -> Shape:
    """Strides that walk a tensor of ``shape``/``strides`` as if expanded to ``out_shape``."""
    pad = len(out_shape) - len(shape)
    return tuple(
        0 if d < pad or shape[d - pad] == 1 else strides[d - pad]
        for d in range(len(out_shape))
    )


@dataclass(frozen=True)
class Layout:
    """The output as rows: ``sizes[0]`` is the row length, ``sizes[1:]`` enumerate rows.

    ``strides[k]`` lists operand ``k``'s strides (grad_output, self, target, out), in
    elements, aligned with ``sizes`` (innermost first).
    """

    sizes: Shape
    strides: Tuple[Shape, Shape, Shape, Shape]

    @property
    def row_length(self) -> int:
        return self.sizes[0]

    @property
    def num_rows(self) -> int:
        rows = 1
        for size in self.sizes[1:]:
            rows *= size
        return rows

    @property
    def num_outer_dims(self) -> int:
        return len(self.sizes) - 1

    @property
    def inner_strides(self) -> Shape:
        return tuple(s[0] for s in self.strides)

    @property
    def tile_rows(self) -> int:
        """Size of the second coalesced dimension: the rows of a 2-D tile (1 if none)."""
        return self.sizes[1] if len(self.sizes) > 1 else 1

    def row_strides(self) -> Shape:
        """Each operand's stride along the tile's rows (0 if there is no second dimension)."""
        return tuple(s[1] if len(s) > 1 else 0 for s in self.strides)

    def tile_modes(self, transpose: bool = True) -> Tuple[int, int, int, int]:
        """How each operand is moved over a 2-D tile (``kernels.TILE``, ...): a broadcast
        dimension is not walked at all, and an operand with unit stride along the rows (and
        not the columns) is moved along its rows and transposed on chip (unless not
        ``transpose``: then it is walked at its column stride)."""
        has_rows = len(self.sizes) > 1
        modes = []
        for k, (col_stride, row_stride) in enumerate(zip(self.inner_strides,
                                                         self.row_strides())):
            turned = transpose and has_rows and row_stride == 1 and abs(col_stride) != 1
            if k == OUT:  # written: never broadcast (validation refuses a self-overlapping out)
                modes.append((TRANSPOSED if turned else TILE).value)
            elif col_stride == 0:
                modes.append((SCALAR if row_stride == 0 else ROW_VECTOR).value)
            elif row_stride == 0 and has_rows:
                modes.append(COL_VECTOR.value)
            else:
                modes.append((TRANSPOSED if turned else TILE).value)
        return tuple(modes)

    def per_row_inputs(self) -> Optional[Tuple[bool, bool, bool]]:
        """For rows that the flat kernel can move flat (``ROW_LENGTH``): which inputs
        (grad_output, self, target) hold one value per row, contiguously, where the output is
        rows of a power-of-two length of at most ``MAX_EXPANDED_ROW`` elements, each input
        either walks them as the output does or holds one value per row (grad_output may be
        one value), and one at least holds one value per row. None for any other layout."""
        if len(self.sizes) != 2 or self.sizes[0] & (self.sizes[0] - 1) or \
                not 2 <= self.sizes[0] <= MAX_EXPANDED_ROW:
            return None
        dense, per_row = (1, self.sizes[0]), (0, 1)
        if self.strides[OUT] != dense:
            return None
        flags = []
        for k in (GRAD, SELF, TARGET):
            strides = tuple(self.strides[k])
            if strides not in (dense, per_row) and not (k == GRAD and self.scalar_grad):
                return None
            flags.append(strides == per_row)
        return tuple(flags) if any(flags) else None

    @property
    def scalar_grad(self) -> bool:
        """grad_output is one element broadcast to the whole output."""
        return not any(self.strides[GRAD])

    @property
    def flat(self) -> bool:
        """Launched by the flat kernel (paths ``flat`` and ``flat_scalar_grad``)."""
        return self.path.startswith("flat")

    @property
    def path(self) -> str:
        """Launch path: ``flat``, ``flat_scalar_grad`` (the flat kernel), ``strided`` or
        ``transposed`` (the strided kernel; the latter turns an operand on chip)."""
        dense = self.num_outer_dims == 0 and all(
            s[0] == 1 for k, s in enumerate(self.strides) if not (k == GRAD and self.scalar_grad)
        )
        if not dense:
            return "transposed" if TRANSPOSED.value in self.tile_modes() else "strided"
        return "flat_scalar_grad" if self.scalar_grad else "flat"


def _should_swap(dim_inner: int, dim_outer: int, sizes: Shape, strides) -> int:
    """TensorIterator's comparison: >0 when ``dim_inner`` should move outwards."""
    for k in _ORDER_PRIORITY:
        a, b = strides[k][dim_inner], strides[k][dim_outer]
        if a == 0 or b == 0:
            continue  # a broadcast dimension says nothing about memory order
        if a != b:
            return 1 if a > b else -1
        if sizes[dim_inner] > sizes[dim_outer]:
            return 1
    return 0


def coalesce(shape: Shape, operand_strides: Sequence[Shape]) -> Layout:
    """Describe the broadcast output ``shape`` walked by four operands as a ``Layout``.

    ``operand_strides`` are the operands' strides already broadcast to ``shape``. Raises
    ``ValueError`` if the layout needs more than ``MAX_OUTER_DIMS + 1`` dimensions.
    """
    # 1. Size-1 dimensions do not move any pointer. Innermost first from here on.
    dims = [d for d in reversed(range(len(shape))) if shape[d] != 1]
    if not dims:
        return Layout((1,), ((0,), (0,), (0,), (0,)))
    sizes = tuple(shape[d] for d in dims)
    strides = tuple(tuple(s[d] for d in dims) for s in operand_strides)

    # 2. Order dimensions by stride (insertion sort, as TensorIterator::reorder_dimensions).
    perm = list(range(len(dims)))
    for i in range(1, len(perm)):
        j = i
        for k in range(i - 1, -1, -1):
            verdict = _should_swap(perm[k], perm[j], sizes, strides)
            if verdict > 0:
                perm[k], perm[j] = perm[j], perm[k]
                j = k
            elif verdict < 0:
                break
    sizes = tuple(sizes[p] for p in perm)
    strides = tuple(tuple(s[p] for p in perm) for s in strides)

    # 3. Merge an outer dimension into the one inside it when every operand steps over the
    #    inner one exactly once per outer step.
    merged_sizes = [sizes[0]]
    merged_strides = [[s[0]] for s in strides]
    for d in range(1, len(sizes)):
        if all(s[d] == m[-1] * merged_sizes[-1] for s, m in zip(strides, merged_strides)):
            merged_sizes[-1] *= sizes[d]
        else:
            merged_sizes.append(sizes[d])
            for m, s in zip(merged_strides, strides):
                m.append(s[d])

    # 4. A tile spans the two innermost dimensions: its columns are the one more operands walk
    #    with unit stride, so that as many transfers as possible need no on-chip transpose.
    if len(merged_sizes) > 1:
        unit = [sum(m[d] == 1 for m in merged_strides) for d in (0, 1)]
        if unit[1] > unit[0]:
            merged_sizes[0], merged_sizes[1] = merged_sizes[1], merged_sizes[0]
            for m in merged_strides:
                m[0], m[1] = m[1], m[0]

    if len(merged_sizes) - 1 > MAX_OUTER_DIMS:
        raise ValueError(
            f"the operands' layouts cannot be coalesced to {MAX_OUTER_DIMS + 1} dimensions "
            f"(they need {len(merged_sizes)}); make one of them contiguous first"
        )
    return Layout(tuple(merged_sizes), tuple(tuple(s) for s in merged_strides))


def of_tensors(tensors: Sequence) -> Layout:
    """``coalesce`` for (grad_output, self, target, out) tensors, or anything with their
    ``shape`` and ``stride()``: the output's shape is the iteration space."""
    shape = tuple(tensors[OUT].shape)
    return coalesce(shape, [broadcast_strides(tuple(t.shape), t.stride(), shape)
                            for t in tensors[:4]])
