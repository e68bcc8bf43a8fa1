"""Every command line validates its arguments: a bad one is a usage error naming the option,
exit status 2, no traceback (``cli``)."""

import argparse
import sys
from pathlib import Path

import pytest
import torch

from mse_grad_triton import backends, cli, tune
from mse_grad_triton.tools import ascend_check, check, cuda_check

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import bench  # noqa: E402

COMMANDS = {"check": check.main, "tune": tune.main, "bench": bench.main,
            "ascend-check": ascend_check.main, "cuda-check": cuda_check.main}
ABSENT = [name for name, present in (("cuda", torch.cuda.is_available()),
                                     ("npu", cli._torch_npu())) if not present]

# (command, arguments, what the one error line must say)
USAGE_ERRORS = [
    ("check", ["--device", "nonsense"], "--device nonsense: not a device name"),
    ("check", ["--device", "meta"], "--device meta: the kernel does not run on meta"),
    ("check", ["--device", "cpu:3"], "--device cpu:3"),
    *[("check", ["--device", name], f"--device {name}: ") for name in ABSENT],
    ("check", ["--size", "0x5"], "invalid size '0x5'"),
    ("check", ["--size", "wide"], "invalid size 'wide'"),
    ("check", ["--size", "1000000x1000000"], "--size 1000000000000: 1000000000000 elements"),
    ("tune", ["--sizes", "0"], "invalid size '0'"),
    ("tune", ["--sizes", "-5"], "invalid size '-5'"),
    ("tune", ["--sizes", "2^100"], "invalid size '2^100'"),
    ("tune", ["--sizes", "2^16,2^50"], "--sizes 1125899906842624: 1125899906842624 elements"),
    ("tune", ["--dtypes", "float8"], "invalid choice 'float8'"),
    ("tune", ["--dtypes", "float16,"], "invalid choice ''"),
    ("tune", ["--paths", "nonsense"], "invalid choice 'nonsense'"),
    ("tune", ["--device", "nonsense"], "--device nonsense"),
    ("bench", ["--sizes", "0"], "invalid size '0'"),
    ("bench", ["--sizes", "-4"], "invalid size '-4'"),
    ("bench", ["--sizes", "2^-3"], "invalid size '2^-3'"),
    ("bench", ["--sizes", "2^50"], "--sizes 1125899906842624"),
    ("bench", ["--dtypes", "float8"], "invalid choice 'float8'"),
    ("bench", ["--cases", "nonsense"], "invalid choice 'nonsense'"),
    ("bench", ["--providers", "nonsense"], "invalid choice 'nonsense'"),
    ("bench", ["--max-size", "0"], "invalid size '0'"),
    ("bench", ["--device", "nonsense"], "--device nonsense"),
    ("ascend-check", ["--targets", "Ascend999"], "invalid choice 'Ascend999'"),
    ("ascend-check", ["--jobs", "0"], "invalid count '0'"),
    ("cuda-check", ["--archs", "75"], "invalid choice '75'"),
    ("cuda-check", ["--jobs", "-1"], "invalid count '-1'"),
]


@pytest.mark.parametrize("command, arguments, message", USAGE_ERRORS,
                         ids=[f"{c} {' '.join(a)}" for c, a, _ in USAGE_ERRORS])
def test_a_bad_argument_is_a_usage_error(capsys, command, arguments, message):
    with pytest.raises(SystemExit) as stopped:
        COMMANDS[command](arguments)
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    error_line = err.strip().splitlines()[-1]
    assert "error: " in error_line and message in error_line, err


def test_an_absent_device_is_one_line_saying_what_is_present(capsys):
    with pytest.raises(SystemExit) as stopped:
        check.main(["--device", "nonsense:7"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.rstrip().endswith(
        "present: " + ", ".join(cli.present_devices()))


def test_sizes_and_lists_parse_to_what_they_say():
    assert cli.parse_sizes("2^16, 1048576,2^0") == [65536, 1048576, 1]
    assert cli.choice_list(["a", "b"])("b,a") == ["b", "a"]
    assert cli.parse_shape_2d("64X257") == (64, 257)
    assert cli.positive_int("3") == 3


def test_every_command_line_reads_the_device_alike():
    parser = argparse.ArgumentParser()
    cli.add_device_argument(parser)
    assert cli.device_from(parser.parse_args(["--device", "cpu"]), parser) == torch.device("cpu")
    assert cli.device_from(parser.parse_args([]), parser) == backends.default_device()
