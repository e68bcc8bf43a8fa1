"""The fused MSE-loss backward kernel.

For every element of the broadcast output it computes, in one pass,

    out = grad_output * ((self - target) * scale)

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

Launch paths are constexpr specialisations of this one kernel:
- flat: ``NUM_OUTER_DIMS == 0`` and unit inner strides (Triton specialises integer arguments
  equal to 1 as constants), i.e. contiguous 1-D tiles;
- scalar grad: ``SCALAR_GRAD`` loads the single ``grad_output`` element once per program;
- strided: ``NUM_OUTER_DIMS > 0`` and/or non-unit inner strides.
Independently, ``WRITE_NEGATED`` also stores the target's gradient (``-out``) in the same pass.
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
def _load(pointers, mask, COMPUTE_DTYPE: tl.constexpr, SKIP_PADDING: tl.constexpr):
    """Load a tile in its stored dtype and widen it to ``COMPUTE_DTYPE``.

    With triton-ascend, ``care_padding=False`` skips filling masked lanes: they are never
    stored.
    """
    if SKIP_PADDING:
        values = tl.load(pointers, mask=mask, care_padding=False)
    else:
        values = tl.load(pointers, mask=mask)
    return values.to(COMPUTE_DTYPE)


# ``scale_divisor`` stays a runtime integer even when it is 1 (Triton would otherwise turn it
# into a constant), so that the float64 path can widen it with ``.to``.
@triton.jit(do_not_specialize=["scale_divisor"])
def mse_loss_backward_kernel(
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
    if COMPUTE_FP64:
        # triton-ascend refuses tl.cast to float64; .to is accepted by every backend.
        scale = 2.0 / scale_divisor.to(tl.float64)
    lanes = tl.arange(0, BLOCK_SIZE)
    if WIDE_LANES:
        lanes = lanes.to(tl.int64)
    if SCALAR_GRAD:
        grad = tl.load(grad_output_ptr).to(compute_dtype)

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
        x = _load(self_ptr + self_offset + lanes * self_inner_stride, mask,
                  compute_dtype, SKIP_PADDING)
        y = _load(target_ptr + target_offset + lanes * target_inner_stride, mask,
                  compute_dtype, SKIP_PADDING)
        if not SCALAR_GRAD:
            grad = _load(grad_output_ptr + grad_offset + lanes * grad_inner_stride, mask,
                         compute_dtype, SKIP_PADDING)
        result = grad * ((x - y) * scale)
        tl.store(out_ptr + out_offset + lanes * out_inner_stride,
                 result.to(out_ptr.dtype.element_ty), mask=mask)
        if WRITE_NEGATED:
            tl.store(negated_out_ptr + out_offset + lanes * out_inner_stride,
                     (-result).to(negated_out_ptr.dtype.element_ty), mask=mask)
