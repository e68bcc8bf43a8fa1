"""Planning a launch: from the operands' metadata, the reduction, the device's facts and a
configuration to everything the launch needs (``LaunchPlan``: kernel, tile shape and modes,
grid, arguments, constexprs).

One pure function, ``plan_launch``, which the launcher, the gates (``tools/ascend_check``,
``tools/cuda_check``), the execution check, the tuner and the pipe model all call; its steps:

1. the operands as coalesced rows (``layout.of_tensors``);
2. the configuration: the caller's, else the device kind's default (``default_config``: on
   Ascend for the kind of tile the call compiles to, ``tile_kind``, and the shortest DMA run
   each size would move, ``shortest_run_bytes``);
3. the evaluation order (``evaluation_order``);
4. the kernel: flat (a flat layout, or rows narrower than ``NARROW_ROW_BYTES`` moved flat,
   ``per_row_inputs``) and its arguments (``flat_arguments``), or strided: its tile shape
   (``tile_shape``; on Ascend a tile that turns operands on chip takes at least
   ``min_tile_cols`` columns), each operand's mode refined for that tile
   (``tile_modes_for``) and the integer arguments (``strided_arguments``);
5. the grid: at most the device's units times the config's programs per unit; a flat call
   gives each program an equal share of consecutive elements (``equal_share``).

Only metadata is read: no tensor operation, no tuned table, no tuning, no device (the
launcher resolves tables and first-use tuning into the ``config`` it passes).
"""

from dataclasses import dataclass, field, replace
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch

from . import backends, chips, configs, kernels, layout, triton_compat
from .kernels import MAX_OUTER_DIMS, mse_loss_backward_flat_kernel, mse_loss_backward_strided_kernel
from .layout import Layout
from .reduction import gradient_scale, scale_divisor

_INT32_LIMIT = 2**31


@dataclass(frozen=True)
class LaunchPlan:
    """Everything a launch needs besides the tensors: kernel, arguments, constexprs, grid."""

    layout: Layout
    config: configs.KernelConfig
    num_programs: int
    kernel: object             # the @triton.jit entry: flat or strided
    scalar_args: Tuple         # the kernel's arguments after the five pointers, in order
    constexprs: dict
    launch_tail: Tuple         # scalar_args as a compiled kernel's launcher takes them
    tile: Tuple[int, int] = (1, 1)  # (rows, columns) of a tile: (1, BLOCK_SIZE) when flat
    num_tiles: int = 1         # tiles launched (flat: every program's share in tiles)
    last_tile_fraction: float = 1.0  # how full a program's last tile is (flat: its share's)
    # Compiled kernels by pointer alignment (filled by CompiledBackend.launch).
    compiled: dict = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def path(self) -> str:
        return self.layout.path

    @property
    def moved_flat(self) -> bool:
        """Launched by the flat kernel: a flat layout, or short rows moved flat."""
        return self.kernel is mse_loss_backward_flat_kernel


def plan_launch(grad_output: torch.Tensor, self: torch.Tensor, target: torch.Tensor,
                out: torch.Tensor, reduction_code: int, device_backend: backends.DeviceBackend,
                config: Optional[configs.KernelConfig] = None,
                negated_out: Optional[torch.Tensor] = None) -> LaunchPlan:
    """Layout, configuration, grid and kernel arguments for validated, non-empty operands.

    ``config``: the launcher's (a tuned table's entry, or the tuner's candidate); None: the
    device kind's default (``default_config``). A ``negated_out`` also receives ``-out``.
    Only metadata is read, so meta tensors describe a launch as well as real ones.
    """
    operands = (grad_output, self, target, out)
    rows = layout.of_tensors(operands)
    if config is None:
        config = default_config(rows, (*operands, negated_out), reduction_code, device_backend)
    scale = (gradient_scale(reduction_code, self.numel()),
             scale_divisor(reduction_code, self.numel()))
    constexprs = dict(
        SCALAR_GRAD=rows.scalar_grad,
        WRITE_NEGATED=negated_out is not None,
        SKIP_PADDING=backends.TRITON_HAS_CARE_PADDING,
        COMPUTE_FP64=any(t.dtype == torch.float64 for t in operands),
        ORDER=evaluation_order(rows.scalar_grad, [t.dtype for t in operands[:3]], scale[0]),
    )
    per_row = per_row_inputs(rows, operands)
    max_programs = device_backend.num_units * config.programs_per_unit
    last_tile_fraction = 1.0
    if rows.flat or per_row:  # 1-D tiles of config.block_size over each program's share
        kernel = mse_loss_backward_flat_kernel
        tile = (1, config.block_size)
        flat_args, flat_constexprs, shares = flat_arguments(
            rows, per_row, config.block_size, max_programs, device_backend.kind == "npu")
        num_programs, num_tiles = shares.programs, shares.num_tiles
        last_tile_fraction = shares.last_tile_fraction
        scalar_args = (*scale, *flat_args)
        constexprs.update(flat_constexprs)
    else:
        kernel = mse_loss_backward_strided_kernel
        modes = rows.tile_modes(config.transpose)
        transposed = transposed_operands(modes, negated_out is not None)
        if rows.path == "strided":  # nothing to turn: one canonical config, whatever the knob
            config = replace(config, transpose=True)
        config = configs.fit_for_transposes(device_backend.kind, config, transposed)
        tile = tile_shape(rows, config.block_size, transposed > 0,
                          min_tile_cols(modes, (*operands, negated_out),
                                        device_backend.kind == "npu"))
        scalar_args, strided_constexprs, num_tiles = strided_arguments(
            rows, tile_modes_for(rows, modes, tile, device_backend.kind == "npu"), tile)
        scalar_args = (*scale, *scalar_args)
        constexprs.update(strided_constexprs)
        num_programs = max(1, min(num_tiles, max_programs))
    config = replace(config, block_size=tile[0] * tile[1])
    launch_tail = triton_compat.launch_values(kernel, (None,) * 5 + scalar_args, constexprs)[5:]
    return LaunchPlan(rows, config, num_programs, kernel, scalar_args, constexprs, launch_tail,
                      tile, num_tiles, last_tile_fraction)


# On Ascend each program's share of a flat call is a multiple of this many elements: a
# multiple of the UB's 32-byte block for every dtype, and of 16, so that Triton marks the
# ``share`` argument divisible by 16 (aligned vector accesses in every share).
SHARE_GRANULE = 64


class Shares(NamedTuple):
    """How a flat call is shared: ``programs`` programs of ``share`` consecutive elements each
    (the last what is left), walked in ``num_tiles`` tiles in all (each program's share in
    tiles), a share's last tile ``last_tile_fraction`` full."""

    programs: int
    share: int
    num_tiles: int
    last_tile_fraction: float


def equal_share(numel: int, max_programs: int, block_size: int, npu: bool) -> Shares:
    """How a flat call of ``numel`` elements is shared among at most ``max_programs``
    programs in tiles of ``block_size`` (``Shares``; every program has work). On Ascend
    (``npu``) the shares are as equal as ``SHARE_GRANULE`` allows, so that every vector
    core works even on a call of a few tiles, each walking a partial last tile (aclnn keeps
    ceil(N / 12288) cores busy: REFERENCE.md section 1); elsewhere in whole tiles, as equal
    as they come (only the call's last tile partial)."""
    granule = SHARE_GRANULE if npu else block_size
    per_program = -(-numel // max(1, max_programs))
    share = -(-per_program // granule) * granule
    tiles_per_program = -(-share // block_size)
    last = share - (tiles_per_program - 1) * block_size
    programs = -(-numel // share)
    return Shares(programs, share, programs * tiles_per_program, last / block_size)


def flat_arguments(rows: Layout, per_row: Optional[Tuple[bool, bool, bool]], block_size: int,
                   max_programs: int, npu: bool) -> Tuple[tuple, dict, Shares]:
    """The flat kernel's integer arguments (after the scale), its layout constexprs and how
    the call is shared among its programs (``equal_share``). ``per_row``: which inputs hold
    one value per row of ``rows.row_length`` (``per_row_inputs``), or None."""
    numel = rows.row_length * rows.num_rows
    shares = equal_share(numel, max_programs, block_size, npu)
    flags = per_row or (False, False, False)
    constexprs = dict(BLOCK_SIZE=block_size, ROW_LENGTH=rows.row_length if per_row else 1,
                      GRAD_PER_ROW=flags[0], SELF_PER_ROW=flags[1], TARGET_PER_ROW=flags[2])
    return (numel, shares.share), constexprs, shares


# A tile row narrower than this is padded to it in an Ascend A2/A3 UB (one 32-byte block,
# REFERENCE.md section 8), and each row then moves as a DMA packet of its own.
NARROW_ROW_BYTES = 32


def per_row_inputs(rows: Layout, operands) -> Optional[Tuple[bool, bool, bool]]:
    """Which inputs hold one value per row, where the output's rows are narrower than
    ``NARROW_ROW_BYTES`` and the flat kernel moves them flat, repeating those inputs on chip
    (``Layout.per_row_inputs``); else None (the strided kernel's 2-D tile)."""
    per_row = rows.per_row_inputs()
    narrowest = min(t.element_size() for t in operands if t is not None)
    if per_row is None or rows.row_length * narrowest >= NARROW_ROW_BYTES:
        return None
    return per_row


def evaluation_order(scalar_grad: bool, input_dtypes, scale: float) -> int:
    """How the kernel evaluates ``grad * (self - target) * scale`` (``kernels._gradient``),
    keeping every intermediate in range: with a one-value grad_output, two scalar factors each
    program chooses (``SCALAR_FACTORS``); with a scale >= 1 (none, sum) or fp16 inputs only,
    the product first (``PRODUCT_FIRST``); else per element (``GUARDED``: a full grad_output
    with mean in fp32 or bf16)."""
    if scalar_grad:
        return kernels.SCALAR_FACTORS.value
    if scale >= 1.0 or all(dtype == torch.float16 for dtype in input_dtypes):
        return kernels.PRODUCT_FIRST.value
    return kernels.GUARDED.value


def default_config(rows: Layout, operands, reduction_code: int,
                   device_backend) -> configs.KernelConfig:
    """The device kind's default config for a call without a tuned entry
    (``configs.select_config``): on NPU for what its tile is (``tile_kind``) and the shortest
    run a strided tile of each size would move (``shortest_run_bytes``)."""
    kind, shortest_run = None, None
    if device_backend.kind == "npu":
        kind = tile_kind(rows, operands, reduction_code, chip=device_backend.chip)
        if not rows.flat and not per_row_inputs(rows, operands):
            def shortest_run(block_size: int) -> int:
                return shortest_run_bytes(rows, operands, block_size)
    return configs.select_config(device_backend.kind, rows.row_length, rows.num_rows,
                                 device_backend.num_units, tile_kind=kind,
                                 shortest_run=shortest_run)


def tile_kind(rows: Layout, operands, reduction_code: int, transpose: bool = True, *,
              chip: chips.Chip) -> configs.TileKind:
    """What kind of tile a launch compiles to for an Ascend ``chip`` (``configs.TileKind``:
    what the UB plan depends on besides the tile size), for ``operands`` (grad_output, self,
    target, out, negated_out or None) laid out as ``rows``."""
    loaded, stored = tile_itemsizes(rows, operands)
    per_row = per_row_inputs(rows, operands)
    modes = () if rows.flat else rows.tile_modes(transpose)
    along_columns = (kernels.TILE.value, kernels.COL_VECTOR.value)
    step = col_step(rows, modes)
    element_strided = any(mode in along_columns and abs(rows.inner_strides[k]) not in (1, step)
                          for k, mode in enumerate(modes))
    scale = gradient_scale(reduction_code, operands[1].numel())
    order = evaluation_order(rows.scalar_grad, [t.dtype for t in operands[:3]], scale)
    path = ("flat" if rows.flat else f"rows of {rows.row_length}" if per_row else "strided")
    return configs.TileKind(chip.toolchain.name, path, modes, tuple(loaded), tuple(stored),
                            configs.row_padding(rows.row_length, loaded + stored,
                                                rows.flat or bool(per_row), chip.ub_align_bytes),
                            element_strided, order)


def tile_itemsizes(rows: Layout, operands) -> Tuple[List[int], List[int]]:
    """What a tile moves, for its kind (``tile_kind``): the item sizes of the tensors it loads
    (all three inputs, but a one-element grad_output is loaded once per program) and of those
    it stores (``out``, and the target's gradient unless ``operands[4]`` is None)."""
    loaded, stored = tile_operands(rows, operands[4] is not None)
    return ([operands[i].element_size() for i in loaded],
            [operands[i].element_size() for i in stored])


def tile_operands(rows: Layout, negated: bool) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """Indices (grad_output, self, target, out, negated_out: 0..4) of the operands every tile
    loads — a one-element grad_output is loaded once per program instead — and stores."""
    loaded = (1, 2) if rows.scalar_grad else (0, 1, 2)
    return loaded, ((3, 4) if negated else (3,))


def transposed_operands(modes: Tuple[int, ...], negated: bool) -> int:
    """How many tensors a strided tile moves along its rows (``modes``: ``Layout.tile_modes``;
    the target's gradient, when written, is moved as ``out``)."""
    transposed = sum(mode == kernels.TRANSPOSED.value for mode in modes)
    return transposed + (negated and bool(modes) and modes[3] == kernels.TRANSPOSED.value)


def min_tile_cols(modes: Tuple[int, ...], operands, npu: bool) -> int:
    """The fewest columns a tile that turns operands on chip may take (``tile_shape``): on
    Ascend (``npu``), where more tensors move whole tiles along the tile's rows (``TILE``:
    DMA runs of ``BLOCK_COLS`` elements) than along its columns (``TRANSPOSED``: runs of
    ``BLOCK_ROWS``), enough for the majority's runs to reach ``configs.FULL_SPEED_RUN_BYTES``
    (a DMA packet under 256 B moves slower: Huawei's small-packet figures, REFERENCE.md
    section 9; a 16-bit 8192-element tile near square has 128-byte runs on one side); else 1
    (as near square as it fits). ``operands``: grad_output, self, target, out, negated_out
    or None (moved as ``out``)."""
    negated = operands[4] is not None
    natural = [k for k, mode in enumerate(modes) if mode == kernels.TILE.value]
    natural += [4] if negated and modes[3] == kernels.TILE.value else []
    if not npu or len(natural) <= transposed_operands(modes, negated):
        return 1
    return configs.FULL_SPEED_RUN_BYTES // min(operands[k].element_size() for k in natural)


def tile_shape(rows: Layout, block_size: int, square: bool,
               min_cols: int = 1) -> Tuple[int, int]:
    """``(BLOCK_ROWS, BLOCK_COLS)`` of a strided tile of about ``block_size`` elements: as
    wide as the row (short rows pack many rows per tile), or ``square`` (an operand is moved
    along the rows: both of its transfer dimensions long) as near square as it fits with at
    least ``min_cols`` columns (``min_tile_cols``)."""
    def ceil_pow2(n: int) -> int:
        return 1 << (n - 1).bit_length()

    cols_wanted = ceil_pow2(rows.row_length)
    square_cols = min(block_size, max(1 << (block_size.bit_length() - 1) // 2, min_cols))
    block_cols = min(cols_wanted, square_cols if square else block_size)
    block_rows = min(ceil_pow2(rows.tile_rows), block_size // block_cols)
    return block_rows, min(cols_wanted, block_size // block_rows)


# Column strides a stepped input may have to be moved as unit-stride runs (``STEPPED``): at
# most this many times the bytes it needs.
STEPPED_COL_STRIDES = (2, 4, 8)


def col_step(rows: Layout, modes: Sequence[int]) -> int:
    """The column stride of the inputs moved ``STEPPED`` on Ascend: the one stride other than 1
    every input walked along the columns at such a stride shares, if it is one of
    ``STEPPED_COL_STRIDES`` (a slice such as ``x[:, ::2]``); else 1 (none)."""
    strides = {stride for stride, mode in zip(rows.inner_strides[:3], modes[:3])
               if mode == kernels.TILE.value and stride != 1}
    step = strides.pop() if len(strides) == 1 else 1
    return step if step in STEPPED_COL_STRIDES else 1


def tile_modes_for(rows: Layout, modes: Sequence[int], tile: Tuple[int, int],
                   npu: bool = False) -> Tuple[int, ...]:
    """``modes`` (``Layout.tile_modes``) refined for a ``(BLOCK_ROWS, BLOCK_COLS)`` tile: an
    input broadcast across the rows and every outer dimension whose row is one column tile
    is the same for every tile (``HELD_ROW``: loaded once per program); an operand turned on
    chip whose lines lie back to back over one row tile (``DENSE_TRANSPOSED``: its tile is
    one contiguous run, as a channels-last tensor's with all its channels in the tile). On
    Ascend (``npu``) inputs at a column stride of ``col_step`` are moved ``STEPPED`` (the UB
    would give each element a 32-byte slot of its own)."""
    block_rows, block_cols = tile
    refined = list(modes)
    step = col_step(rows, modes) if npu else 1
    for k, mode in enumerate(modes):
        if k < 3 and mode == kernels.TILE.value and step > 1 and rows.inner_strides[k] == step:
            refined[k] = kernels.STEPPED.value
        elif (mode == kernels.COL_VECTOR.value and rows.row_length <= block_cols
                and not any(rows.strides[k][2:])):
            refined[k] = kernels.HELD_ROW.value
        elif (mode == kernels.TRANSPOSED.value and rows.tile_rows == block_rows
                and rows.inner_strides[k] == block_rows):
            refined[k] = kernels.DENSE_TRANSPOSED.value
    return tuple(refined)


def shortest_run_bytes(rows: Layout, operands, block_size: int) -> int:
    """The shortest unit-stride run, in bytes, any operand a strided tile of ``block_size``
    elements moves per tile (``operands``: grad_output, self, target, out, negated_out or
    None; the last moved as ``out``) in its mode (``tile_modes_for``); a held row or a scalar
    is not moved per tile."""
    modes = rows.tile_modes()
    block_rows, block_cols = tile = tile_shape(
        rows, block_size, transposed_operands(modes, operands[4] is not None) > 0,
        min_tile_cols(modes, operands, npu=True))
    modes = tile_modes_for(rows, modes, tile, npu=True)
    runs = []
    for k, operand in enumerate(operands):
        mode, strides = modes[min(k, 3)], rows.strides[min(k, 3)]
        if operand is None or mode in (kernels.SCALAR.value, kernels.HELD_ROW.value):
            continue
        if mode == kernels.DENSE_TRANSPOSED.value:
            elements = block_rows * block_cols
        elif mode == kernels.STEPPED.value:
            elements = (block_cols - 1) * strides[0] + 1
        elif mode in (kernels.ROW_VECTOR.value, kernels.TRANSPOSED.value):
            elements = block_rows if abs(strides[1]) == 1 else 1
        else:
            elements = block_cols if abs(strides[0]) == 1 else 1
        runs.append(elements * operand.element_size())
    return min(runs)


def strided_arguments(rows: Layout, modes, tile: Tuple[int, int]) -> Tuple[tuple, dict, int]:
    """The strided kernel's integer arguments (after the scale), its layout constexprs and
    the number of tiles, for operands moved in ``modes`` (``tile_modes_for``)."""
    block_rows, block_cols = tile
    col_tiles = -(-rows.row_length // block_cols)
    row_tiles = -(-rows.tile_rows // block_rows)
    num_tiles = col_tiles * row_tiles * rows.num_rows // rows.tile_rows
    col_strides, row_strides = list(rows.inner_strides), list(rows.row_strides())
    # The stride between the lines of each operand's 2-D transfers (its rows' in TILE mode, its
    # columns' in TRANSPOSED mode) is passed divided by the largest power of two (up to 16
    # elements: a 16-byte vector of 1-byte items) dividing all of them, and multiplied back
    # by a constexpr: the compiler then knows every line starts aligned (vector accesses).
    lines = [(k, row_strides if mode == kernels.TILE.value else col_strides)
             for k, mode in enumerate(modes)
             if mode in (kernels.TILE.value, kernels.TRANSPOSED.value)]
    lines = [(k, strides) for k, strides in lines if strides[k]]
    align = min([16] + [abs(strides[k]) & -abs(strides[k]) for k, strides in lines])
    for k, strides in lines:
        strides[k] //= align
    outer = []
    for d in range(2, MAX_OUTER_DIMS + 1):  # unused dimensions: size 1, stride 0
        if d < len(rows.sizes):
            outer += [rows.sizes[d], *(s[d] for s in rows.strides)]
        else:
            outer += [1, 0, 0, 0, 0]
    span = max(abs(c) * (block_cols - 1) + abs(r) * (block_rows - 1)
               for c, r in zip(rows.inner_strides, rows.row_strides()))
    args = (rows.row_length, rows.tile_rows, col_tiles, row_tiles, num_tiles,
            *col_strides, *row_strides, *outer)
    constexprs = dict(
        NUM_OUTER_DIMS=max(0, rows.num_outer_dims - 1),
        GRAD_MODE=modes[0], SELF_MODE=modes[1], TARGET_MODE=modes[2], OUT_MODE=modes[3],
        MASK_ROWS=rows.tile_rows % block_rows != 0, MASK_COLS=rows.row_length % block_cols != 0,
        STRIDE_ALIGN=align, WIDE_LANES=span >= _INT32_LIMIT,
        BLOCK_ROWS=block_rows, BLOCK_COLS=block_cols,
        COL_STEP=max((rows.inner_strides[k] for k, mode in enumerate(modes)
                      if mode == kernels.STEPPED.value), default=1))
    return args, constexprs, num_tiles
