"""The fused MSE-loss backward kernel.

For every element of the broadcast output it computes, in one pass,

    out = grad_output * (self - target) * scale

with ``scale = 2 / self.numel()`` for ``reduction="mean"`` and ``2`` otherwise. Each input is
loaded once in its own dtype, the arithmetic runs in fp32 (fp64 when a float64 tensor takes
part), and the result is rounded once, when it is stored in the output's dtype.

Iteration space (built by ``layout.py``): the output's coalesced dimensions, innermost first,
each operand with its own strides (0 where it is broadcast), so broadcasting, slicing and
transposition need no copies.

Two thin entries share one gradient body (``_gradient``), so each launch pays only for the
arguments its path uses. The grid is persistent: about one program per vector core (NPU) or a
few per SM (CUDA). Offsets stay cheap past 2**31 elements: a tile's base is an int64 *scalar*,
the per-lane part an int32 vector (int64 vector arithmetic runs as scalar code on Ascend A2/A3).

- ``mse_loss_backward_flat_kernel``: every operand contiguous over the whole output (or a
  one-element grad_output): 9 runtime arguments; each program owns one ``share`` of
  consecutive elements (``planning.equal_share``: on Ascend an equal share, so that a small
  call still keeps every core busy) and walks it in tiles of ``BLOCK_SIZE``. Whole tiles are
  loaded without a mask, a share's partial last tile with one, so 16-byte vector accesses
  never depend on the element count (which is not specialised on: one compiled variant per
  tile size).
- ``mse_loss_backward_strided_kernel``: a tile is ``BLOCK_ROWS x BLOCK_COLS`` elements of the
  two innermost dimensions; up to ``MAX_OUTER_DIMS - 1`` outer dimensions are peeled off the
  tile index. Each operand is moved in its mode (``TILE``, ``ROW_VECTOR``, ``COL_VECTOR``,
  ``SCALAR``, ``TRANSPOSED``, and two refinements once the tile is known: ``HELD_ROW``,
  ``DENSE_TRANSPOSED``: see below), so that every global transfer walks unit stride where the
  operand has one, no tile moves what an earlier one of the program moved, and lines that
  lie back to back move as one run; whole tiles are moved unmasked, partial edge tiles
  masked.

Constexpr switches: ``SCALAR_GRAD`` loads the single ``grad_output`` element once per program;
``WRITE_NEGATED`` also stores the target's gradient (``-out``) in the same pass; ``ORDER`` says
how the product is evaluated so that no intermediate leaves the range the result is in
(``GUARDED``, ``PRODUCT_FIRST``, ``SCALAR_FACTORS``: see ``_gradient``).
"""

import triton
import triton.language as tl

# Outer dimensions the kernel can peel off a row index. With the innermost dimension this is
# 8, aclnn's rank limit: every input aclnn accepts fits before coalescing, and higher-rank
# inputs fit whenever their layout coalesces to 8 dimensions or fewer.
MAX_OUTER_DIMS = 7


@triton.jit
def _peel_outer_dim(row, size, grad_stride, self_stride, target_stride, out_stride,
                    grad_offset, self_offset, target_offset, out_offset):
    """Split one dimension of ``size`` off a row index.

    Returns the remaining row index and the four operands' element offsets (int64 scalars)
    advanced by this dimension's index times each operand's stride.
    """
    index = tl.cast(row % size, tl.int64)
    return (row // size,
            grad_offset + index * grad_stride,
            self_offset + index * self_stride,
            target_offset + index * target_stride,
            out_offset + index * out_stride)


@triton.jit
def _load(pointers, mask, COMPUTE_DTYPE: tl.constexpr, SKIP_PADDING: tl.constexpr,
          MASKED: tl.constexpr):
    """Load a tile in its stored dtype and widen it to ``COMPUTE_DTYPE``.

    With triton-ascend, ``care_padding=False`` skips filling masked lanes: they are never
    stored. Unmasked (full) tiles let every backend use its widest transfers.
    """
    if not MASKED:
        values = tl.load(pointers)
    elif SKIP_PADDING:
        values = tl.load(pointers, mask=mask, care_padding=False)
    else:
        values = tl.load(pointers, mask=mask)
    return values.to(COMPUTE_DTYPE)


# How the gradient is evaluated: the ORDER constexpr, chosen per launch by the launcher
# (``planning.evaluation_order``). Each keeps every intermediate in range where it is used.
GUARDED = tl.constexpr(0)         # per element: the scale on whichever factor keeps it in range
PRODUCT_FIRST = tl.constexpr(1)   # (grad * difference) * scale: the scale is >= 1 (none, sum),
                                  # or every input is fp16 (no fp32 extreme is reachable)
SCALAR_FACTORS = tl.constexpr(2)  # grad is one value: difference * first * second, two scalars
                                  # each program chooses once (_scalar_factors)


@triton.jit
def _gradient(grad, second, x, y, scale, ORDER: tl.constexpr):
    """``grad * (x - y) * scale`` in the compute dtype (operands broadcast against each other),
    evaluated in ``ORDER``. With ``SCALAR_FACTORS``, ``grad`` and ``second`` are the scalars
    ``_scalar_factors`` chose and ``scale`` is unused (``second`` is unused otherwise).

    ``GUARDED`` (a full grad with mean: the launcher picks it only for a scale < 1, and
    2**-62 <= 2 / numel) puts the scale on ``grad`` where ``|grad| > 1``: ``grad * scale`` is
    then a normal number, ``> scale``; elsewhere on the difference: ``difference * scale``
    shrinks it, and where that sinks into the subnormals the result, times ``|grad| <= 1``,
    is smaller still, so nothing is lost that the result keeps; neither product overflows
    before the result does. One test of ``grad`` against a constant (never a compare of two
    masks): 4 vector instructions per tile more than the arithmetic. ``PRODUCT_FIRST``:
    with a scale >= 1, grad * difference overflows only where the result does, and rounds
    twice only in fp32's subnormals (<= 1 ULP there); with fp16 inputs nothing is near an
    fp32 extreme.
    """
    difference = x - y
    if ORDER == SCALAR_FACTORS:
        result = (difference * grad) * second
    elif ORDER == PRODUCT_FIRST:
        result = (grad * difference) * scale
    else:
        scale_grad = tl.abs(grad) > 1.0
        scaled = tl.where(scale_grad, grad, difference) * scale
        result = scaled * tl.where(scale_grad, difference, grad)
    return result


@triton.jit
def _negated(result):
    """``-result`` with IEEE negation's signs everywhere (-(+0) is -0, as torch's neg gives):
    Triton's unary minus is ``0 - x`` under triton-ascend (+0 for +0), fneg upstream, and
    bishengir-compile-a5 turns ``0 - x`` into ``x * -1``; a multiplication by -1 means the
    same on every backend and the interpreter."""
    return result * -1.0


@triton.jit
def _scalar_factors(grad, scale, COMPUTE_FP64: tl.constexpr):
    """The two scalars a one-value grad_output's gradient multiplies each difference by, chosen
    once per program (scalar code): ``(grad * scale, 1)`` where grad * scale is a normal number
    (or 0 because grad is): then difference * (grad * scale) is in range wherever the result
    is; else ``(scale, grad)``: grad * scale overflowed (a scale of 2: then 2 * difference
    overflows only where the result does) or fell below the normal numbers (grad tiny: a
    difference * scale in the subnormals makes a result that rounds to 0 anyway)."""
    scaled = grad * scale
    smallest = 2.2250738585072014e-308 if COMPUTE_FP64 else 1.1754943508222875e-38
    largest = 1.7976931348623157e308 if COMPUTE_FP64 else 3.4028234663852886e38
    magnitude = tl.abs(scaled)
    in_range = ((magnitude >= smallest) & (magnitude <= largest)) | (grad == 0.0)
    first = tl.where(in_range, scaled, scale)
    second = tl.where(in_range, 1.0, grad)
    return first, second


@triton.jit
def _doubled(values):
    """Each element twice, in order: ``values`` interleaved with itself (``tl.interleave``'s
    join and reshape, spelled out: the interpreter cannot call a library ``@triton.jit``
    function from an interpreted helper)."""
    return tl.reshape(tl.join(values, values), (2 * values.shape[0],))


@triton.jit
def _expand_rows(values, ROW_LENGTH: tl.constexpr):
    """Each of ``values`` ``ROW_LENGTH`` times over, in order (2, 4 or 8)."""
    if ROW_LENGTH >= 2:
        values = _doubled(values)
    if ROW_LENGTH >= 4:
        values = _doubled(values)
    if ROW_LENGTH >= 8:
        values = _doubled(values)
    return values


@triton.jit
def _flat_operand(base, start, lanes, row_lanes, mask, row_mask, PER_ROW: tl.constexpr,
                  ROW_LENGTH: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
                  SKIP_PADDING: tl.constexpr, MASKED: tl.constexpr):
    """An input's values over the 1-D tile at ``start``; ``PER_ROW``: it holds one value per
    row of ``ROW_LENGTH`` output elements (contiguous), loaded once each and repeated on
    chip."""
    if PER_ROW:
        values = _load(base + start // ROW_LENGTH + row_lanes, row_mask, COMPUTE_DTYPE,
                       SKIP_PADDING, MASKED)
        values = _expand_rows(values, ROW_LENGTH)
    else:
        values = _load(base + start + lanes, mask, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    return values


@triton.jit
def _flat_tile(grad, second, grad_ptr, self_ptr, target_ptr, out_pointers, negated_pointers,
               start, lanes, row_lanes, mask, row_mask, scale, COMPUTE_DTYPE: tl.constexpr,
               SCALAR_GRAD: tl.constexpr, WRITE_NEGATED: tl.constexpr,
               SKIP_PADDING: tl.constexpr, MASKED: tl.constexpr, ORDER: tl.constexpr,
               ROW_LENGTH: tl.constexpr, GRAD_PER_ROW: tl.constexpr,
               SELF_PER_ROW: tl.constexpr, TARGET_PER_ROW: tl.constexpr):
    """One 1-D tile at ``start``: load self, target (and grad_output unless ``SCALAR_GRAD``:
    then ``grad`` is its value), store the gradient (and its negation)."""
    x = _flat_operand(self_ptr, start, lanes, row_lanes, mask, row_mask, SELF_PER_ROW,
                      ROW_LENGTH, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    y = _flat_operand(target_ptr, start, lanes, row_lanes, mask, row_mask, TARGET_PER_ROW,
                      ROW_LENGTH, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    if not SCALAR_GRAD:
        grad = _flat_operand(grad_ptr, start, lanes, row_lanes, mask, row_mask, GRAD_PER_ROW,
                             ROW_LENGTH, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    result = _gradient(grad, second, x, y, scale, ORDER)
    if MASKED:
        tl.store(out_pointers, result.to(out_pointers.dtype.element_ty), mask=mask)
        if WRITE_NEGATED:
            tl.store(negated_pointers, _negated(result).to(negated_pointers.dtype.element_ty),
                     mask=mask)
    else:
        tl.store(out_pointers, result.to(out_pointers.dtype.element_ty))
        if WRITE_NEGATED:
            tl.store(negated_pointers, _negated(result).to(negated_pointers.dtype.element_ty))


# How an operand is moved over a BLOCK_ROWS x BLOCK_COLS tile of the strided kernel: the
# values of its *_MODE constexprs (``layout.tile_modes`` chooses them).
# (constexpr globals: the only kind a Triton kernel may read; ``.value`` is the int).
TILE = tl.constexpr(0)        # in 2-D: row * row_stride + col * col_stride
ROW_VECTOR = tl.constexpr(1)  # broadcast along the row (col_stride 0): [BLOCK_ROWS], y[:, None]
COL_VECTOR = tl.constexpr(2)  # broadcast across rows (row_stride 0): [BLOCK_COLS], y[None, :]
SCALAR = tl.constexpr(3)      # broadcast over the whole tile: one element per tile
TRANSPOSED = tl.constexpr(4)  # unit stride along the rows: moved [BLOCK_COLS, BLOCK_ROWS],
                              # turned with tl.trans on chip
# Two refinements the launcher makes once the tile is known (``planning.tile_modes_for``):
HELD_ROW = tl.constexpr(5)    # COL_VECTOR the same for every tile (broadcast over every outer
                              # dimension, its row one column tile): loaded once per program
DENSE_TRANSPOSED = tl.constexpr(6)  # TRANSPOSED whose lines lie back to back (a line stride of
                                    # BLOCK_ROWS, one row tile): moved as one 1-D run,
                                    # reshaped and turned on chip
STEPPED = tl.constexpr(7)     # TILE at a column stride of COL_STEP (2, 4 or 8: a stepped
                              # slice): each row's unit-stride run moved, every COL_STEP-th
                              # element kept on chip (Ascend: no 32-byte UB slot per element)


@triton.jit
def _tile_offsets(rows, cols, row_stride, col_stride, MODE: tl.constexpr):
    """Element offsets of an operand's tile, in the shape it is moved in (see the modes)."""
    if MODE == ROW_VECTOR:
        offsets = rows * row_stride
    elif MODE == COL_VECTOR or MODE == HELD_ROW:
        offsets = cols * col_stride
    elif MODE == DENSE_TRANSPOSED:
        offsets = tl.arange(0, cols.shape[0] * rows.shape[0])
    elif MODE == TRANSPOSED:
        offsets = cols[:, None] * col_stride + rows[None, :] * row_stride
    else:
        offsets = rows[:, None] * row_stride + cols[None, :] * col_stride
    return offsets


@triton.jit
def _tile_mask(row_mask, col_mask, cols_left, MODE: tl.constexpr):
    """The tile's mask in the shape an operand is moved in (``cols_left``: its columns; a
    ``DENSE_TRANSPOSED`` tile's rows are always whole, and its mask bounds the one run)."""
    if MODE == ROW_VECTOR:
        mask = row_mask
    elif MODE == COL_VECTOR or MODE == HELD_ROW:
        mask = col_mask
    elif MODE == DENSE_TRANSPOSED:
        lanes = tl.arange(0, col_mask.shape[0] * row_mask.shape[0])
        mask = lanes < cols_left * row_mask.shape[0]
    elif MODE == TRANSPOSED:
        mask = col_mask[:, None] & row_mask[None, :]
    else:
        mask = row_mask[:, None] & col_mask[None, :]
    return mask


@triton.jit
def _aligned_strides(row_stride, col_stride, ALIGN: tl.constexpr, MODE: tl.constexpr):
    """An operand's (row, column) strides. The stride between the lines of its 2-D transfers
    (the rows' in TILE mode, the columns' in TRANSPOSED mode) arrives divided by ``ALIGN``, a
    power of two dividing it: multiplying it back tells the compiler that every line starts
    aligned (vector accesses on short or transposed rows)."""
    if MODE == TILE:
        row_stride = row_stride * ALIGN
    elif MODE == TRANSPOSED:
        col_stride = col_stride * ALIGN
    return row_stride, col_stride


@triton.jit
def _every_step(values, COL_STEP: tl.constexpr):
    """Every ``COL_STEP``-th column of a ``[rows, columns * COL_STEP]`` tile (2, 4 or 8):
    the even columns, split off ``log2(COL_STEP)`` times."""
    rows: tl.constexpr = values.shape[0]
    if COL_STEP >= 2:
        values, _ = tl.split(tl.reshape(values, (rows, values.shape[1] // 2, 2)))
    if COL_STEP >= 4:
        values, _ = tl.split(tl.reshape(values, (rows, values.shape[1] // 2, 2)))
    if COL_STEP >= 8:
        values, _ = tl.split(tl.reshape(values, (rows, values.shape[1] // 2, 2)))
    return values


@triton.jit
def _load_stepped(pointer, rows, row_stride, row_mask, cols_left, BLOCK_COLS: tl.constexpr,
                  COL_STEP: tl.constexpr, SKIP_PADDING: tl.constexpr):
    """A ``STEPPED`` operand's tile in its stored dtype: each row's run from the tile's first
    element to its last (``cols_left``: columns in the tile), then every ``COL_STEP``-th
    element of it. Always masked: the run stops at the last element, never past the slice."""
    span = tl.arange(0, BLOCK_COLS * COL_STEP)
    mask = row_mask[:, None] & (span[None, :] < (cols_left - 1) * COL_STEP + 1)
    pointers = pointer + rows[:, None] * row_stride + span[None, :]
    if SKIP_PADDING:
        values = tl.load(pointers, mask=mask, care_padding=False)
    else:
        values = tl.load(pointers, mask=mask)
    return _every_step(values, COL_STEP)


@triton.jit
def _load_tile(pointer, rows, cols, row_stride, col_stride, row_mask, col_mask, cols_left,
               MODE: tl.constexpr, MASKED: tl.constexpr, SKIP_PADDING: tl.constexpr,
               COMPUTE_DTYPE: tl.constexpr, COL_STEP: tl.constexpr):
    """One operand's tile in the compute dtype, shaped to broadcast against
    ``[BLOCK_ROWS, BLOCK_COLS]``: every global transfer walks the operand's own memory
    order (a transposed operand is turned on chip, a stepped one thinned on chip)."""
    if MODE == SCALAR:
        values = tl.load(pointer).to(COMPUTE_DTYPE)
    elif MODE == STEPPED:
        values = _load_stepped(pointer, rows, row_stride, row_mask, cols_left, cols.shape[0],
                               COL_STEP, SKIP_PADDING).to(COMPUTE_DTYPE)
    else:
        values = _load(pointer + _tile_offsets(rows, cols, row_stride, col_stride, MODE),
                       _tile_mask(row_mask, col_mask, cols_left, MODE), COMPUTE_DTYPE,
                       SKIP_PADDING, MASKED)
        if MODE == ROW_VECTOR:
            values = values[:, None]
        elif MODE == COL_VECTOR or MODE == HELD_ROW:
            values = values[None, :]
        elif MODE == TRANSPOSED:
            values = tl.trans(values)
        elif MODE == DENSE_TRANSPOSED:
            values = tl.trans(tl.reshape(values, (cols.shape[0], rows.shape[0])))
    return values


@triton.jit
def _held_row(pointer, rows, cols, col_stride, num_cols, MODE: tl.constexpr,
              MASK_COLS: tl.constexpr, SKIP_PADDING: tl.constexpr, COMPUTE_DTYPE: tl.constexpr):
    """A ``HELD_ROW`` input's tile (``[1, BLOCK_COLS]``: the row at the origin, the same for
    every tile), loaded once per program; else an unused placeholder."""
    values = tl.full((1, 1), 0, COMPUTE_DTYPE)
    if MODE == HELD_ROW:
        values = _load_tile(pointer, rows, cols, 0, col_stride, rows >= 0, cols < num_cols,
                            num_cols, MODE, MASK_COLS, SKIP_PADDING, COMPUTE_DTYPE, 1)
    return values


@triton.jit
def _input_tile(held, pointer, rows, cols, row_stride, col_stride, row_mask, col_mask,
                cols_left, MODE: tl.constexpr, MASKED: tl.constexpr,
                SKIP_PADDING: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
                COL_STEP: tl.constexpr):
    """An input's tile: ``held`` (``_held_row``) in ``HELD_ROW`` mode, else loaded."""
    if MODE == HELD_ROW:
        values = held
    else:
        values = _load_tile(pointer, rows, cols, row_stride, col_stride, row_mask, col_mask,
                            cols_left, MODE, MASKED, SKIP_PADDING, COMPUTE_DTYPE, COL_STEP)
    return values


@triton.jit
def _store_tile(pointer, values, rows, cols, row_stride, col_stride, row_mask, col_mask,
                cols_left, MODE: tl.constexpr, MASKED: tl.constexpr):
    """Store a ``[BLOCK_ROWS, BLOCK_COLS]`` tile (``MODE`` TILE, TRANSPOSED or
    DENSE_TRANSPOSED)."""
    values = values.to(pointer.dtype.element_ty)
    if MODE == TRANSPOSED:
        values = tl.trans(values)
    elif MODE == DENSE_TRANSPOSED:
        values = tl.reshape(tl.trans(values), (values.shape[1] * values.shape[0],))
    pointers = pointer + _tile_offsets(rows, cols, row_stride, col_stride, MODE)
    if MASKED:
        tl.store(pointers, values, mask=_tile_mask(row_mask, col_mask, cols_left, MODE))
    else:
        tl.store(pointers, values)


@triton.jit
def _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64: tl.constexpr,
                   SCALAR_GRAD: tl.constexpr, ORDER: tl.constexpr):
    """The compute dtype's scale, and what stands for grad_output in every tile: with
    ``SCALAR_GRAD`` its one value (``SCALAR_FACTORS``: the two scalar factors; otherwise the
    second is unused)."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    if COMPUTE_FP64:
        # triton-ascend refuses tl.cast to float64; .to is accepted by every backend.
        scale = 2.0 / scale_divisor.to(tl.float64)
    if SCALAR_GRAD:
        grad = tl.load(grad_output_ptr).to(compute_dtype)
        second = scale  # unused
        if ORDER == SCALAR_FACTORS:
            grad, second = _scalar_factors(grad, scale, COMPUTE_FP64)
    else:
        grad = scale  # unused: every tile loads its own grad_output values
        second = scale
    return scale, grad, second


# ``numel`` is not specialised on (divisibility by 16 would double the compiled variants;
# full tiles are unmasked anyway). ``share`` is: the planner makes it a multiple of 64 or of
# the tile, so Triton marks it divisible by 16 and every program's tiles start aligned (16-byte
# vectors on CUDA). ``scale_divisor`` stays a runtime integer even when it is 1 (Triton would
# otherwise turn it into a constant), so that the float64 path can widen it.
@triton.jit(do_not_specialize=["numel", "scale_divisor"])
def mse_loss_backward_flat_kernel(
    grad_output_ptr,   # [numel], or one element if SCALAR_GRAD
    self_ptr,          # [numel], contiguous
    target_ptr,        # [numel], contiguous
    out_ptr,           # [numel], contiguous
    negated_out_ptr,   # WRITE_NEGATED: [numel], -out (the target's gradient)
    scale,             # fp32: 2 / self.numel() for mean, else 2; rounded once from float64
    scale_divisor,     # self.numel() for mean, else 1 (the float64 path's exact scale)
    numel,             # elements of the output
    share,             # elements per program: program p owns [p * share, (p + 1) * share)
    SCALAR_GRAD: tl.constexpr,     # grad_output has one element: load it once per program
    WRITE_NEGATED: tl.constexpr,   # also store -result (the target's gradient) in the same pass
    SKIP_PADDING: tl.constexpr,    # triton-ascend: masked lanes need no fill value
    COMPUTE_FP64: tl.constexpr,    # a float64 operand takes part: compute in float64
    ORDER: tl.constexpr,           # GUARDED, PRODUCT_FIRST or SCALAR_FACTORS (see _gradient)
    BLOCK_SIZE: tl.constexpr,      # elements per tile (a power of two)
    # Short rows moved flat: the output is rows of ROW_LENGTH (a power of two, 1: none); an
    # input *_PER_ROW holds one value per row ([numel / ROW_LENGTH], contiguous).
    ROW_LENGTH: tl.constexpr,
    GRAD_PER_ROW: tl.constexpr,
    SELF_PER_ROW: tl.constexpr,
    TARGET_PER_ROW: tl.constexpr,
):
    """``grad_output * (self - target) * scale`` over contiguous operands (or, with
    ``ROW_LENGTH``, inputs of one value per row): each program walks its own ``share`` of
    consecutive elements in tiles, the whole ones unmasked, then its partial last tile, if
    any, masked (``share`` a multiple of ``ROW_LENGTH``: a row is never split)."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    scale, grad, second = _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64,
                                         SCALAR_GRAD, ORDER)
    lanes = tl.arange(0, BLOCK_SIZE)
    row_lanes = tl.arange(0, BLOCK_SIZE // ROW_LENGTH)
    begin = tl.cast(tl.program_id(0), tl.int64) * share
    end = tl.maximum(tl.minimum(begin + share, numel), begin)
    whole_tiles = ((end - begin) // BLOCK_SIZE).to(tl.int32)
    for tile in range(0, whole_tiles):
        start = begin + tl.cast(tile, tl.int64) * BLOCK_SIZE
        _flat_tile(grad, second, grad_output_ptr, self_ptr, target_ptr, out_ptr + start + lanes,
                   negated_out_ptr + start + lanes, start, lanes, row_lanes, None, None, scale,
                   compute_dtype, SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, False, ORDER,
                   ROW_LENGTH, GRAD_PER_ROW, SELF_PER_ROW, TARGET_PER_ROW)
    start = begin + tl.cast(whole_tiles, tl.int64) * BLOCK_SIZE
    if start < end:
        left = (end - start).to(tl.int32)
        _flat_tile(grad, second, grad_output_ptr, self_ptr, target_ptr, out_ptr + start + lanes,
                   negated_out_ptr + start + lanes, start, lanes, row_lanes, lanes < left,
                   row_lanes < left // ROW_LENGTH, scale, compute_dtype, SCALAR_GRAD,
                   WRITE_NEGATED, SKIP_PADDING, True, ORDER, ROW_LENGTH, GRAD_PER_ROW,
                   SELF_PER_ROW, TARGET_PER_ROW)


@triton.jit
def _strided_tile(grad, second, grad_pointer, self_pointer, target_pointer, out_pointer,
                  negated_pointer, rows, cols, row_mask, col_mask, cols_left, grad_row_step,
                  self_row_step, target_row_step, out_row_step, grad_col_step,
                  self_col_step, target_col_step, out_col_step, scale,
                  GRAD_MODE: tl.constexpr, SELF_MODE: tl.constexpr, TARGET_MODE: tl.constexpr,
                  OUT_MODE: tl.constexpr, SCALAR_GRAD: tl.constexpr,
                  WRITE_NEGATED: tl.constexpr, SKIP_PADDING: tl.constexpr,
                  MASKED: tl.constexpr, COMPUTE_DTYPE: tl.constexpr,
                  BLOCK_ROWS: tl.constexpr, BLOCK_COLS: tl.constexpr, ORDER: tl.constexpr,
                  held_grad, held_self, held_target, COL_STEP: tl.constexpr):
    """One 2-D tile at the given operand pointers (its origin): load self, target (and
    grad_output unless ``SCALAR_GRAD``: then ``grad`` is its value), store the gradient (and
    its negation). Masks are used only when ``MASKED``. An input in ``HELD_ROW`` mode is not
    loaded: ``held_*`` is its tile."""
    x = _input_tile(held_self, self_pointer, rows, cols, self_row_step, self_col_step,
                    row_mask, col_mask, cols_left, SELF_MODE, MASKED, SKIP_PADDING,
                    COMPUTE_DTYPE, COL_STEP)
    y = _input_tile(held_target, target_pointer, rows, cols, target_row_step, target_col_step,
                    row_mask, col_mask, cols_left, TARGET_MODE, MASKED, SKIP_PADDING,
                    COMPUTE_DTYPE, COL_STEP)
    if not SCALAR_GRAD:
        grad = _input_tile(held_grad, grad_pointer, rows, cols, grad_row_step, grad_col_step,
                           row_mask, col_mask, cols_left, GRAD_MODE, MASKED, SKIP_PADDING,
                           COMPUTE_DTYPE, COL_STEP)
    result = tl.broadcast_to(_gradient(grad, second, x, y, scale, ORDER),
                             (BLOCK_ROWS, BLOCK_COLS))
    _store_tile(out_pointer, result, rows, cols, out_row_step, out_col_step, row_mask,
                col_mask, cols_left, OUT_MODE, MASKED)
    if WRITE_NEGATED:
        _store_tile(negated_pointer, _negated(result), rows, cols, out_row_step, out_col_step,
                    row_mask, col_mask, cols_left, OUT_MODE, MASKED)


# ``scale_divisor``: as in the flat kernel.
@triton.jit(do_not_specialize=["scale_divisor"])
def mse_loss_backward_strided_kernel(
    grad_output_ptr,   # broadcast to the output through its strides; one element if SCALAR_GRAD
    self_ptr,          # broadcast to the output through its strides
    target_ptr,        # broadcast to the output through its strides
    out_ptr,           # the output (broadcast shape), written through its strides
    negated_out_ptr,   # WRITE_NEGATED: -out, same shape and strides as out (target's gradient)
    scale,             # fp32: 2 / self.numel() for mean, else 2; rounded once from float64
    scale_divisor,     # self.numel() for mean, else 1: the float64 path recomputes the scale
                       # from it, because Triton passes Python floats as fp32
    num_cols,          # elements per row: the innermost coalesced dimension (the tile's columns)
    num_rows,          # size of the next dimension (the tile's rows); 1 if there is none
    col_tiles,         # cdiv(num_cols, BLOCK_COLS)
    row_tiles,         # cdiv(num_rows, BLOCK_ROWS)
    num_tiles,         # col_tiles * row_tiles * the outer dimensions' sizes
    # Column and row strides; between the lines of 2-D transfers divided by STRIDE_ALIGN.
    grad_col_stride, self_col_stride, target_col_stride, out_col_stride,
    grad_row_stride, self_row_stride, target_row_stride, out_row_stride,
    # Outer dimensions, innermost first: size, then each operand's stride (in elements).
    size_2, grad_stride_2, self_stride_2, target_stride_2, out_stride_2,
    size_3, grad_stride_3, self_stride_3, target_stride_3, out_stride_3,
    size_4, grad_stride_4, self_stride_4, target_stride_4, out_stride_4,
    size_5, grad_stride_5, self_stride_5, target_stride_5, out_stride_5,
    size_6, grad_stride_6, self_stride_6, target_stride_6, out_stride_6,
    size_7, grad_stride_7, self_stride_7, target_stride_7, out_stride_7,
    NUM_OUTER_DIMS: tl.constexpr,  # how many of the outer dimensions above are real (0..6)
    SCALAR_GRAD: tl.constexpr,     # grad_output has one element: load it once per program
    GRAD_MODE: tl.constexpr,       # how each operand is moved over a tile (TILE, ..., HELD_ROW)
    SELF_MODE: tl.constexpr,
    TARGET_MODE: tl.constexpr,
    OUT_MODE: tl.constexpr,        # TILE or TRANSPOSED (also negated_out's)
    WRITE_NEGATED: tl.constexpr,   # also store -result (the target's gradient) in the same pass
    MASK_ROWS: tl.constexpr,       # num_rows % BLOCK_ROWS != 0: the last row tile is partial
    MASK_COLS: tl.constexpr,       # num_cols % BLOCK_COLS != 0: the last column tile is partial
    STRIDE_ALIGN: tl.constexpr,    # a power of two dividing those line strides
    WIDE_LANES: tl.constexpr,      # a tile spans 2**31 elements of some operand: int64 lanes
    SKIP_PADDING: tl.constexpr,    # triton-ascend: masked lanes need no fill value
    COMPUTE_FP64: tl.constexpr,    # a float64 operand takes part: compute in float64
    ORDER: tl.constexpr,           # GUARDED, PRODUCT_FIRST or SCALAR_FACTORS (see _gradient)
    BLOCK_ROWS: tl.constexpr,      # tile rows (a power of two)
    BLOCK_COLS: tl.constexpr,      # tile columns (a power of two)
    COL_STEP: tl.constexpr,        # the column stride of the STEPPED inputs (1: none)
):
    """Write ``grad_output * (self - target) * scale`` for every output element (and its
    negation, the gradient for ``target``, when ``WRITE_NEGATED``), one 2-D tile at a time."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    scale, grad, second = _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64,
                                         SCALAR_GRAD, ORDER)
    rows = tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, BLOCK_COLS)
    if WIDE_LANES:
        rows = rows.to(tl.int64)
        cols = cols.to(tl.int64)
    held_grad = _held_row(grad_output_ptr, rows, cols, grad_col_stride, num_cols, GRAD_MODE,
                          MASK_COLS, SKIP_PADDING, compute_dtype)
    held_self = _held_row(self_ptr, rows, cols, self_col_stride, num_cols, SELF_MODE,
                          MASK_COLS, SKIP_PADDING, compute_dtype)
    held_target = _held_row(target_ptr, rows, cols, target_col_stride, num_cols, TARGET_MODE,
                            MASK_COLS, SKIP_PADDING, compute_dtype)

    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        col_tile = tile % col_tiles
        outer = tile // col_tiles
        row_tile = outer % row_tiles
        outer = outer // row_tiles
        col_start = tl.cast(col_tile, tl.int64) * BLOCK_COLS
        row_start = tl.cast(row_tile, tl.int64) * BLOCK_ROWS
        grad_row_step, grad_col_step = _aligned_strides(grad_row_stride, grad_col_stride,
                                                        STRIDE_ALIGN, GRAD_MODE)
        self_row_step, self_col_step = _aligned_strides(self_row_stride, self_col_stride,
                                                        STRIDE_ALIGN, SELF_MODE)
        target_row_step, target_col_step = _aligned_strides(
            target_row_stride, target_col_stride, STRIDE_ALIGN, TARGET_MODE)
        out_row_step, out_col_step = _aligned_strides(out_row_stride, out_col_stride,
                                                      STRIDE_ALIGN, OUT_MODE)
        grad_offset = col_start * grad_col_step + row_start * grad_row_step
        self_offset = col_start * self_col_step + row_start * self_row_step
        target_offset = col_start * target_col_step + row_start * target_row_step
        out_offset = col_start * out_col_step + row_start * out_row_step
        # Unrolled at compile time (Triton 3.2 has no tuple arguments or starred unpacking).
        if NUM_OUTER_DIMS > 0:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_2, grad_stride_2, self_stride_2, target_stride_2, out_stride_2,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 1:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_3, grad_stride_3, self_stride_3, target_stride_3, out_stride_3,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 2:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_4, grad_stride_4, self_stride_4, target_stride_4, out_stride_4,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 3:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_5, grad_stride_5, self_stride_5, target_stride_5, out_stride_5,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 4:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_6, grad_stride_6, self_stride_6, target_stride_6, out_stride_6,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 5:
            outer, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                outer, size_7, grad_stride_7, self_stride_7, target_stride_7, out_stride_7,
                grad_offset, self_offset, target_offset, out_offset)

        # A tile that fits whole is moved unmasked (vector accesses on CUDA along any axis);
        # only the partial tiles at the ends of a dimension compare lanes against what is left
        # (int32 lanes against int32 scalars: no int64 vector compare). Two call sites, because
        # MASKED must be a constexpr; without partial tiles ``whole`` is a constant and only the
        # unmasked one is compiled.
        rows_left = BLOCK_ROWS
        cols_left = BLOCK_COLS
        whole = True
        if MASK_ROWS or MASK_COLS:
            rows_left = tl.minimum(num_rows - row_start, BLOCK_ROWS).to(tl.int32)
            cols_left = tl.minimum(num_cols - col_start, BLOCK_COLS).to(tl.int32)
            whole = (rows_left == BLOCK_ROWS) & (cols_left == BLOCK_COLS)
        if whole:
            _strided_tile(grad, second, grad_output_ptr + grad_offset, self_ptr + self_offset,
                          target_ptr + target_offset, out_ptr + out_offset,
                          negated_out_ptr + out_offset, rows, cols, rows < BLOCK_ROWS,
                          cols < BLOCK_COLS, BLOCK_COLS, grad_row_step, self_row_step,
                          target_row_step, out_row_step, grad_col_step, self_col_step,
                          target_col_step, out_col_step, scale, GRAD_MODE, SELF_MODE,
                          TARGET_MODE, OUT_MODE, SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, False,
                          compute_dtype, BLOCK_ROWS, BLOCK_COLS, ORDER, held_grad, held_self,
                          held_target, COL_STEP)
        else:
            _strided_tile(grad, second, grad_output_ptr + grad_offset, self_ptr + self_offset,
                          target_ptr + target_offset, out_ptr + out_offset,
                          negated_out_ptr + out_offset, rows, cols, rows < rows_left,
                          cols < cols_left, cols_left, grad_row_step, self_row_step,
                          target_row_step, out_row_step, grad_col_step, self_col_step,
                          target_col_step, out_col_step, scale, GRAD_MODE, SELF_MODE,
                          TARGET_MODE, OUT_MODE, SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, True,
                          compute_dtype, BLOCK_ROWS, BLOCK_COLS, ORDER, held_grad, held_self,
                          held_target, COL_STEP)
