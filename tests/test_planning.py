"""Planning (``planning.py``): the tile shape, each operand's mode, the shortest run a tile
moves, the Ascend tile kinds, the compiled variants a batch sweep needs; every plan run
through the interpreter where it makes one."""

import pytest
import torch

from mse_grad_triton import backends, chips, configs, kernels, layout, planning, triton_compat
from mse_grad_triton.testing import assert_ulp_close, make, reference


@pytest.mark.parametrize("case, block_size, run", [
    ("turned_bf16", 8192, 128),       # 64 x 128: the turned operand's lines of 64 x 2 B
    ("turned_bf16", 16384, 256),      # 128 x 128
    ("dense_bf16", 8192, 256),        # 64 x 128, the turned one a single 16 KB run
    ("held_row_f32", 8192, 4 * 4096),  # 2 x 4096; the held self row is not moved per tile
])
def test_the_shortest_run_a_strided_tile_moves(case, block_size, run):

    def meta(shape, dtype=torch.bfloat16):
        return torch.empty(shape, dtype=dtype, device="meta")
    grad, self, target, out = {
        "turned_bf16": lambda: (meta([]), meta([4096, 8192]).t(), meta([8192, 4096]),
                                meta([8192, 4096])),
        "dense_bf16": lambda: (meta([]), meta([8, 64, 32, 32]).to(
            memory_format=torch.channels_last), meta([8, 64, 32, 32]), meta([8, 64, 32, 32])),
        "held_row_f32": lambda: (meta([], torch.float32), meta([1, 4096], torch.float32),
                                 meta([1000, 4096], torch.float32),
                                 meta([1000, 4096], torch.float32)),
    }[case]()
    rows = layout.of_tensors((grad, self, target, out))
    assert planning.shortest_run_bytes(rows, (grad, self, target, out, None), block_size) == run


@pytest.mark.parametrize("dtype, block_size, npu_tile, cpu_tile", [
    (torch.bfloat16, 8192, (64, 128), (128, 64)),  # the natural three: runs of 256 B on NPU
    (torch.bfloat16, 4096, (32, 128), (64, 64)),
    (torch.float32, 4096, (64, 64), (64, 64)),     # square is 256 B both ways already
    (torch.float32, 2048, (32, 64), (64, 32)),
])
def test_on_ascend_a_turned_tile_gives_the_majority_full_speed_runs(dtype, block_size,
                                                                    npu_tile, cpu_tile):
    # A transposed self beside a full grad, target and out: three tensors move whole tiles
    # along the tile's rows (runs of BLOCK_COLS), one along its columns.
    grad, target, out = (torch.empty(1000, 4096, dtype=dtype, device="meta") for _ in range(3))
    self = torch.empty(4096, 1000, dtype=dtype, device="meta").t()
    config = configs.KernelConfig(block_size)
    tiles = [planning.plan_launch(grad, self, target, out, 0, device, config).tile
             for device in (backends.DeviceBackend("npu", "Ascend910B3", 40, False),
                            backends.backend_for(torch.device("cpu")))]
    assert tiles == [npu_tile, cpu_tile]
    rows = layout.of_tensors((grad, self, target, out))
    assert planning.min_tile_cols(rows.tile_modes(), (grad, self, target, out, None), True) \
        == configs.FULL_SPEED_RUN_BYTES // dtype.itemsize
    # Two turned against one natural (out): the tile keeps its shape.
    both = torch.empty(4096, 1000, dtype=dtype, device="meta").t()
    assert planning.min_tile_cols(layout.of_tensors((grad, self, both, out)).tile_modes(),
                                  (grad, self, both, out, None), True) == 1


@pytest.mark.parametrize("case, step", [
    ("every_second", 2),           # x[:, ::2]: whole column tiles
    ("odd_offset_to_the_end", 2),  # x[:, 1::2] of an odd width: the run ends at the storage's
    ("every_fourth_partial", 4),   # end; x[:, ::4] over a partial column tile
    ("both_inputs", 2),            # self and target stepped alike
    ("mixed_steps", 1),            # two strides: element by element
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_a_stepped_slice_moves_unit_stride_runs_on_ascend(case, step, dtype):
    grad, self, target = {
        "every_second": lambda: (torch.tensor(1.5), make([40, 512], dtype, 1)[:, ::2],
                                 make([40, 256], dtype, 2)),
        "odd_offset_to_the_end": lambda: (make([40, 300], dtype, 3),
                                          make([40, 601], dtype, 1)[:, 1::2],
                                          make([40, 300], dtype, 2)),
        "every_fourth_partial": lambda: (torch.tensor(1.5), make([40, 399], dtype, 1)[:, ::4],
                                         make([40, 100], dtype, 2)),
        "both_inputs": lambda: (torch.tensor(1.5), make([40, 600], dtype, 1)[:, ::2],
                                make([40, 599], dtype, 2)[:, ::2]),
        "mixed_steps": lambda: (torch.tensor(1.5), make([40, 600], dtype, 1)[:, ::2],
                                make([40, 1200], dtype, 2)[:, ::4]),
    }[case]()
    out = torch.full(self.shape, float("nan"), dtype=dtype)
    npu = backends.DeviceBackend("npu", "Ascend910B3", 40, False)
    plan = planning.plan_launch(grad, self, target, out, 1, npu, configs.KernelConfig(1024))
    stepped = kernels.STEPPED.value if step > 1 else kernels.TILE.value
    assert plan.constexprs["SELF_MODE"] == stepped and plan.constexprs["COL_STEP"] == step
    assert plan.constexprs["TARGET_MODE"] == (stepped if case == "both_inputs"
                                              else kernels.TILE.value)
    backends.backend_for(self.device).launch(plan, (grad, self, target, out, out))
    assert_ulp_close(out, reference(grad, self, target, "mean"))
    cpu = planning.plan_launch(grad, self, target, out, 1, backends.backend_for(self.device),
                               configs.KernelConfig(1024))
    assert cpu.constexprs["SELF_MODE"] == kernels.TILE.value  # elsewhere: strided accesses


@pytest.mark.parametrize("step, element_strided", [(2, False), (8, False), (3, True)])
def test_only_steps_the_tile_thins_on_chip_give_each_element_a_ub_slot(step, element_strided):
    self = torch.empty(64, 256 * step, device="meta")[:, ::step]
    operands = (torch.empty([], device="meta"), self, torch.empty(64, 256, device="meta"),
                torch.empty(64, 256, device="meta"), None)
    rows = layout.of_tensors(operands[:4])
    kind = planning.tile_kind(rows, operands, 1, chip=chips.chip("Ascend910B3"))
    assert kind.element_strided == element_strided


def test_a_turned_output_whose_tile_is_one_run_writes_both_gradients():
    grad, self, target = torch.tensor(0.5), make([2, 4, 6, 10], torch.float32, 1), \
        make([2, 4, 6, 10], torch.float32, 2)
    out, negated = (torch.full([2, 4, 6, 10], float("nan")).to(memory_format=torch.channels_last)
                    for _ in range(2))
    backend = backends.backend_for(self.device)
    plan = planning.plan_launch(grad, self, target, out, 1, backend, configs.KernelConfig(1024),
                                negated_out=negated)
    assert plan.constexprs["OUT_MODE"] == kernels.DENSE_TRANSPOSED.value
    backend.launch(plan, (grad, self, target, out, negated))
    expected = reference(grad, self, target, "mean")
    assert_ulp_close(out, expected)
    assert_ulp_close(negated, -expected)


@pytest.mark.parametrize("path", ["flat", "flat_scalar_grad"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_at_most_three_compiled_variants_over_batch_sizes(path, dtype):
    # [B, 1000] for B = 1..256, specialised as Triton's JIT would for the installed compiler's
    # device (48 Ascend vector cores, or 132 SMs): each distinct specialisation is one compile,
    # a multi-second bishengir-compile on Ascend.

    if triton_compat.FLAVOUR == "ascend":
        device, target = backends.DeviceBackend("npu", "Ascend910B1", 48, False), \
            triton_compat.target("npu", "Ascend910B3")
    else:
        device, target = backends.DeviceBackend("cuda", "sm90", 132, True), \
            triton_compat.target("cuda", 90)
    variants = set()
    for batch in range(1, 257):
        grad = torch.empty([] if path == "flat_scalar_grad" else [batch, 1000], dtype=dtype,
                           device="meta")
        self, target_, out = (torch.empty(batch, 1000, dtype=dtype, device="meta")
                              for _ in range(3))
        plan = planning.plan_launch(grad, self, target_, out, 1, device)
        assert plan.path == path
        spec = triton_compat.specialise(plan.kernel, (grad, self, target_, out, out,
                                                      *plan.scalar_args),
                                        plan.constexprs, target, device.launch_options(plan.config))
        variants.add(triton_compat.specialisation_key(spec))
    assert len(variants) <= 3


def test_the_strided_form_of_a_transposed_layout_walks_the_column_stride():
    grad, self, target = make([300, 200], torch.float32, 1), \
        make([200, 300], torch.float32, 2).t(), make([300, 200], torch.float32, 3)
    out = torch.empty(300, 200)
    backend = backends.backend_for(self.device)
    turned = planning.plan_launch(grad, self, target, out, 1, backend, configs.KernelConfig(1024))
    walked = planning.plan_launch(grad, self, target, out, 1, backend,
                                  configs.KernelConfig(1024, transpose=False))
    assert turned.path == walked.path == "transposed"
    assert turned.constexprs["SELF_MODE"] == kernels.TRANSPOSED.value and turned.tile == (32, 32)
    assert walked.constexprs["SELF_MODE"] == kernels.TILE.value and walked.tile == (4, 256)
    for plan in (turned, walked):
        backend.launch(plan, (grad, self, target, out, out))
        assert_ulp_close(out, reference(grad, self, target, "mean"))


@pytest.mark.parametrize("numel, max_programs, block_size", [
    (1 << 16, 40, 8192), (1 << 16, 48, 1024), (10007, 40, 2048), (1000, 40, 1024),
    (63, 40, 1024), (1 << 24, 40, 8192), (3 * 8192, 40, 8192), (5, 1, 256)])
@pytest.mark.parametrize("npu", [True, False], ids=["npu", "elsewhere"])
def test_every_program_of_a_flat_call_has_an_equal_share(numel, max_programs, block_size, npu):
    shares = planning.equal_share(numel, max_programs, block_size, npu)
    share = shares.share
    assert 1 <= shares.programs <= max_programs
    assert (shares.programs - 1) * share < numel <= shares.programs * share  # all work, covered
    assert share % (planning.SHARE_GRANULE if npu else block_size) == 0
    tiles = -(-share // block_size)
    assert shares.num_tiles == shares.programs * tiles
    assert shares.last_tile_fraction == (share - (tiles - 1) * block_size) / block_size
    if npu:  # as equal as the granule allows: no program could take 64 elements fewer
        assert share - planning.SHARE_GRANULE < -(-numel // max_programs)
    else:    # whole tiles: as many per program as round-robin tiles would give
        call_tiles = -(-numel // block_size)
        assert tiles == -(-call_tiles // max_programs)


@pytest.mark.parametrize("self_shape, grad_shape, dtype", [
    ([1 << 16], [1 << 16], torch.float32),     # 8 tiles of 8192: 40 shares of 1664
    ([10007], [], torch.bfloat16),             # odd length, one-value grad_output
    ([1001, 4], [1001, 1], torch.float16),     # rows of 4 moved flat: a share never splits one
])
def test_on_ascend_a_small_flat_call_spreads_over_every_core(self_shape, grad_shape, dtype):
    grad, self, target = make(grad_shape, dtype, 1), make(self_shape, dtype, 2), \
        make(self_shape, dtype, 3)
    out = torch.full(self.shape, float("nan"), dtype=dtype)
    npu = backends.DeviceBackend("npu", "Ascend910B3", 40, False)
    plan = planning.plan_launch(grad, self, target, out, 1, npu, configs.KernelConfig(8192))
    numel, share = plan.scalar_args[-2:]
    assert plan.moved_flat and plan.num_programs == -(-numel // share)
    assert plan.num_programs > -(-numel // 8192)  # more cores than tiles of the config
    assert plan.last_tile_fraction == share / 8192 < 1
    backends.backend_for(self.device).launch(plan, (grad, self, target, out, out))
    assert_ulp_close(out, reference(grad, self, target, "mean"))  # every element, once
    cpu = planning.plan_launch(grad, self, target, out, 1, backends.backend_for(self.device),
                               configs.KernelConfig(8192))
    assert cpu.scalar_args[-1] % 8192 == 0  # elsewhere: whole tiles per program
