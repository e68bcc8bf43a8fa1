"""Chip facts as data: what each known Ascend chip is, and what an unknown name gets (the gate
checks the numbers against the compiler's own spec: tests/test_ascend_check.py)."""

import warnings

import pytest
import torch

from mse_grad_triton import backends, chips, planning


def test_every_series_and_toolchain_is_known():
    known = chips.known()
    assert {c.series for c in known.values()} == {"A2", "A3", "950"}
    assert known["Ascend910B3"].vector_cores == 40 and known["Ascend910B1"].vector_cores == 48
    assert known["Ascend910_9599"].vector_cores == 72
    assert known["Ascend910_9599"].ub_bytes == 2031616 // 8 > known["Ascend910B3"].ub_bytes
    assert {c.toolchain.name for c in known.values() if c.series == "950"} == {"910_95"}
    assert chips.TOOLCHAINS["a2_a3"].multibuffer_default
    assert not chips.TOOLCHAINS["910_95"].multibuffer_default
    assert set(chips.targets("910_95")) == {n for n, c in known.items() if c.series == "950"}


@pytest.mark.parametrize("name, nearest", [("Ascend910_9591", "Ascend910_9599"),
                                           ("Ascend910B5", "Ascend910B1"),
                                           ("Ascend910_9399", "Ascend910_9391")])
def test_an_unknown_chip_warns_once_and_gets_its_nearest_familys_facts(name, nearest,
                                                                       monkeypatch):
    monkeypatch.setattr(chips, "_warned", set())
    with pytest.warns(UserWarning, match=f"{name}.*not an Ascend chip.*{nearest}"):
        chip = chips.chip(name)
    assert not chip.known and chip.name == name
    assert (chip.series, chip.toolchain, chip.ub_bytes) == (
        chips.known()[nearest].series, chips.known()[nearest].toolchain,
        chips.known()[nearest].ub_bytes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chips.chip(name)  # once only


def test_the_launcher_plans_each_series_with_its_own_facts():
    shape = [1 << 22]
    operands = (torch.empty([], device="meta"),
                *(torch.empty(shape, device="meta") for _ in range(3)))
    plans = {}
    for name in ("Ascend910B3", "Ascend910_9599"):
        npu = backends.DeviceBackend("npu", name, chips.chip(name).vector_cores, False)
        assert npu.chip is chips.known()[name]
        plans[name] = planning.plan_launch(*operands, 1, npu).config
    assert plans["Ascend910B3"].multibuffer and not plans["Ascend910_9599"].multibuffer
    assert "ub_plan.json" in plans["Ascend910_9599"].source
    assert backends.DeviceBackend("cuda", "H100", 132, True).chip is None
