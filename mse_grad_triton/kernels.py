"""The fused MSE-loss backward kernel.

For every element of the broadcast output it computes, in one pass,

    out = grad_output * (self - target) * scale

with ``scale = 2 / self.numel()`` for ``reduction="mean"`` and ``2`` otherwise. Each input is
loaded once in its own dtype, the arithmetic runs in fp32 (fp64 when a float64 tensor takes
part), and the result is rounded once, when it is stored in the output's dtype.

Iteration space (built by ``layout.py``): the output is ``num_rows`` rows of ``row_length``
elements. The row is the innermost coalesced dimension; up to ``MAX_OUTER_DIMS`` outer
dimensions enumerate the rows. Element ``(row, col)`` of operand ``t`` lives at

    row_offset(t, row) + col * inner_stride(t)

where ``row_offset`` sums ``index_d * stride_d(t)`` over the outer dimensions. A broadcast
dimension has stride 0, so broadcasting, slicing and transposition need no copies.

Work split: a tile is ``BLOCK_SIZE`` consecutive elements of one row. The grid is persistent:
about one program per vector core (NPU) or a few per SM (CUDA), each looping over tiles
``pid, pid + num_programs, ...``. Offsets stay cheap past 2**31 elements: the per-tile base is
an int64 *scalar*, the per-lane part an int32 vector (int64 vector arithmetic runs as scalar
code on Ascend A2/A3).

Two thin entries share one tile body (``_gradient_tile``), so each launch pays only for the
arguments its path uses:
- ``mse_loss_backward_flat_kernel``: every operand contiguous over the whole output (or a
  one-element grad_output): 8 runtime arguments. Full tiles are loaded without a mask, the
  partial last tile with one, so 16-byte vector accesses never depend on the element count
  (which is not specialised on: one compiled variant per tile size);
- ``mse_loss_backward_strided_kernel``: rows with per-operand inner strides and up to
  ``MAX_OUTER_DIMS`` outer dimensions.
Constexpr switches: ``SCALAR_GRAD`` loads the single ``grad_output`` element once per program;
``WRITE_NEGATED`` also stores the target's gradient (``-out``) in the same pass.
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


@triton.jit
def _gradient_tile(grad, grad_pointers, self_pointers, target_pointers, out_pointers,
                   negated_pointers, mask, scale, COMPUTE_DTYPE: tl.constexpr,
                   SCALAR_GRAD: tl.constexpr, WRITE_NEGATED: tl.constexpr,
                   SKIP_PADDING: tl.constexpr, MASKED: tl.constexpr):
    """One tile: load self, target (and grad_output unless ``SCALAR_GRAD``: then ``grad`` is
    its value), store ``grad * ((self - target) * scale)`` (and its negation)."""
    x = _load(self_pointers, mask, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    y = _load(target_pointers, mask, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    if not SCALAR_GRAD:
        grad = _load(grad_pointers, mask, COMPUTE_DTYPE, SKIP_PADDING, MASKED)
    difference = x - y
    # Apply the scale where the intermediate stays in range: to the smaller factor when it
    # grows it (2, for none/sum: 2 * (self - target) may overflow where grad * ... would not),
    # to the larger when it shrinks it (2 / numel, for mean: it may underflow to subnormals).
    # Two selects per element: free in a memory-bound kernel.
    scale_grad = (tl.abs(grad) <= tl.abs(difference)) == (scale >= 1.0)
    scaled = tl.where(scale_grad, grad, difference) * scale
    result = scaled * tl.where(scale_grad, difference, grad)
    if MASKED:
        tl.store(out_pointers, result.to(out_pointers.dtype.element_ty), mask=mask)
        if WRITE_NEGATED:
            tl.store(negated_pointers, (-result).to(negated_pointers.dtype.element_ty),
                     mask=mask)
    else:
        tl.store(out_pointers, result.to(out_pointers.dtype.element_ty))
        if WRITE_NEGATED:
            tl.store(negated_pointers, (-result).to(negated_pointers.dtype.element_ty))


@triton.jit
def _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64: tl.constexpr,
                   SCALAR_GRAD: tl.constexpr):
    """The compute dtype's scale, and the one grad_output value when ``SCALAR_GRAD``."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    if COMPUTE_FP64:
        # triton-ascend refuses tl.cast to float64; .to is accepted by every backend.
        scale = 2.0 / scale_divisor.to(tl.float64)
    if SCALAR_GRAD:
        grad = tl.load(grad_output_ptr).to(compute_dtype)
    else:
        grad = scale  # unused: every tile loads its own grad_output values
    return scale, grad


# ``numel`` is not specialised on (divisibility by 16 would double the compiled variants;
# full tiles are unmasked anyway). ``scale_divisor`` stays a runtime integer even when it is 1
# (Triton would otherwise turn it into a constant), so that the float64 path can widen it.
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
    SCALAR_GRAD: tl.constexpr,     # grad_output has one element: load it once per program
    WRITE_NEGATED: tl.constexpr,   # also store -result (the target's gradient) in the same pass
    SKIP_PADDING: tl.constexpr,    # triton-ascend: masked lanes need no fill value
    COMPUTE_FP64: tl.constexpr,    # a float64 operand takes part: compute in float64
    BLOCK_SIZE: tl.constexpr,      # elements per tile (a power of two)
):
    """``grad_output * (self - target) * scale`` over contiguous operands: full tiles
    unmasked in a persistent loop, then the partial last tile, masked, by one program."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    scale, grad = _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64,
                                 SCALAR_GRAD)
    lanes = tl.arange(0, BLOCK_SIZE)
    full_tiles = numel // BLOCK_SIZE
    for tile in range(tl.program_id(0), full_tiles, tl.num_programs(0)):
        start = tl.cast(tile, tl.int64) * BLOCK_SIZE
        _gradient_tile(grad, grad_output_ptr + start + lanes, self_ptr + start + lanes,
                       target_ptr + start + lanes, out_ptr + start + lanes,
                       negated_out_ptr + start + lanes, None, scale, compute_dtype,
                       SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, False)
    start = tl.cast(full_tiles, tl.int64) * BLOCK_SIZE
    if (start < numel) & (tl.program_id(0) == full_tiles % tl.num_programs(0)):
        mask = lanes < (numel - start).to(tl.int32)
        _gradient_tile(grad, grad_output_ptr + start + lanes, self_ptr + start + lanes,
                       target_ptr + start + lanes, out_ptr + start + lanes,
                       negated_out_ptr + start + lanes, mask, scale, compute_dtype,
                       SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, True)


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
    row_length,        # elements per row (the innermost coalesced dimension)
    tiles_per_row,     # cdiv(row_length, BLOCK_SIZE)
    num_tiles,         # num_rows * tiles_per_row
    grad_inner_stride, self_inner_stride, target_inner_stride, out_inner_stride,
    # Outer dimensions, innermost first: size, then each operand's stride (in elements).
    size_1, grad_stride_1, self_stride_1, target_stride_1, out_stride_1,
    size_2, grad_stride_2, self_stride_2, target_stride_2, out_stride_2,
    size_3, grad_stride_3, self_stride_3, target_stride_3, out_stride_3,
    size_4, grad_stride_4, self_stride_4, target_stride_4, out_stride_4,
    size_5, grad_stride_5, self_stride_5, target_stride_5, out_stride_5,
    size_6, grad_stride_6, self_stride_6, target_stride_6, out_stride_6,
    size_7, grad_stride_7, self_stride_7, target_stride_7, out_stride_7,
    NUM_OUTER_DIMS: tl.constexpr,  # how many of the outer dimensions above are real (0..7)
    SCALAR_GRAD: tl.constexpr,     # grad_output has one element: load it once per program
    WRITE_NEGATED: tl.constexpr,   # also store -result (the target's gradient) in the same pass
    WIDE_LANES: tl.constexpr,      # BLOCK_SIZE * an inner stride reaches 2**31: int64 lanes
    SKIP_PADDING: tl.constexpr,    # triton-ascend: masked lanes need no fill value
    COMPUTE_FP64: tl.constexpr,    # a float64 operand takes part: compute in float64
    BLOCK_SIZE: tl.constexpr,      # elements per tile (a power of two)
):
    """Write ``grad_output * (self - target) * scale`` for every output element (and its
    negation, the gradient for ``target``, when ``WRITE_NEGATED``)."""
    compute_dtype = tl.float64 if COMPUTE_FP64 else tl.float32
    scale, grad = _compute_setup(grad_output_ptr, scale, scale_divisor, COMPUTE_FP64,
                                 SCALAR_GRAD)
    lanes = tl.arange(0, BLOCK_SIZE)
    if WIDE_LANES:
        lanes = lanes.to(tl.int64)

    for tile in range(tl.program_id(0), num_tiles, tl.num_programs(0)):
        row = tile // tiles_per_row
        column_start = tl.cast(tile - row * tiles_per_row, tl.int64) * BLOCK_SIZE
        grad_offset = column_start * grad_inner_stride
        self_offset = column_start * self_inner_stride
        target_offset = column_start * target_inner_stride
        out_offset = column_start * out_inner_stride
        # Unrolled at compile time (Triton 3.2 has no tuple arguments or starred unpacking).
        if NUM_OUTER_DIMS > 0:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_1, grad_stride_1, self_stride_1, target_stride_1, out_stride_1,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 1:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_2, grad_stride_2, self_stride_2, target_stride_2, out_stride_2,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 2:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_3, grad_stride_3, self_stride_3, target_stride_3, out_stride_3,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 3:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_4, grad_stride_4, self_stride_4, target_stride_4, out_stride_4,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 4:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_5, grad_stride_5, self_stride_5, target_stride_5, out_stride_5,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 5:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_6, grad_stride_6, self_stride_6, target_stride_6, out_stride_6,
                grad_offset, self_offset, target_offset, out_offset)
        if NUM_OUTER_DIMS > 6:
            row, grad_offset, self_offset, target_offset, out_offset = _peel_outer_dim(
                row, size_7, grad_stride_7, self_stride_7, target_stride_7, out_stride_7,
                grad_offset, self_offset, target_offset, out_offset)

        # Compare int32 lanes against an int32 scalar: no int64 vector compare.
        mask = lanes < tl.minimum(row_length - column_start, BLOCK_SIZE).to(tl.int32)
        _gradient_tile(grad, grad_output_ptr + grad_offset + lanes * grad_inner_stride,
                       self_ptr + self_offset + lanes * self_inner_stride,
                       target_ptr + target_offset + lanes * target_inner_stride,
                       out_ptr + out_offset + lanes * out_inner_stride,
                       negated_out_ptr + out_offset + lanes * out_inner_stride, mask, scale,
                       compute_dtype, SCALAR_GRAD, WRITE_NEGATED, SKIP_PADDING, True)
