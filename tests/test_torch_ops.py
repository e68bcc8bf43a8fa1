"""PyTorch integration on CPU tensors: training parity, autograd checks, opcheck,
torch.compile, one-pass gradients, broadcasting, enable()/disable(), threads."""

import contextlib
import threading

import pytest
import torch
import torch.nn.functional as F

import mse_grad_triton as mgt
from mse_grad_triton.testing import assert_ulp_close, make


@pytest.fixture(autouse=True)
def stock_pytorch_after():
    yield
    mgt.disable()


@pytest.fixture
def launches(recorded_launches):
    """Every kernel launch in the test, as (plan, operands)."""
    return recorded_launches


def _writes_both(launches):
    """Per launch: did it also write the target's gradient?"""
    return [plan.constexprs["WRITE_NEGATED"] for plan, _ in launches]


# --- training parity ----------------------------------------------------------------------

def _train(loss_fn, steps=20, seed=0):
    """A small regression model trained with SGD; returns per-step d(loss)/d(prediction) and
    the final parameters."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs, targets = torch.randn(32, 8), torch.randn(32, 3)
    prediction_grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        prediction = model(inputs)
        prediction.register_hook(lambda g: prediction_grads.append(g.clone()))
        loss_fn(prediction, targets).backward()
        optimizer.step()
    return prediction_grads, [p.detach().clone() for p in model.parameters()], inputs, targets


@pytest.mark.parametrize("how", ["module", "functional"])
def test_training_matches_stock_pytorch(how, launches):
    loss_fn = mgt.MSELoss() if how == "module" else (lambda p, t: mgt.mse_loss(p, t))
    _assert_trains_like_stock(launches, lambda: _train(loss_fn))


def test_stock_training_under_enable_matches_stock_pytorch(launches, override):
    def train():
        with mgt.enabled(devices=("cpu",)):
            return _train(torch.nn.MSELoss())

    _assert_trains_like_stock(launches, train)


def _assert_trains_like_stock(launches, train):
    stock_grads, stock_params, _, _ = _train(torch.nn.MSELoss())
    our_grads, our_params, _, _ = train()
    assert len(launches) == 20  # every backward ran the kernel
    for stock, mine in zip(stock_grads, our_grads):
        assert_ulp_close(mine, stock.double())  # fp32: within 4 ULP of PyTorch's
    for stock, mine in zip(stock_params, our_params):
        torch.testing.assert_close(mine, stock, rtol=1e-5, atol=1e-6)


def test_forward_value_is_pytorchs():
    x, y = make([7, 9], torch.float32, 1), make([7, 9], torch.float32, 2)
    for reduction in ("none", "mean", "sum"):
        assert torch.equal(mgt.mse_loss(x, y, reduction), F.mse_loss(x, y, reduction=reduction))
        assert torch.equal(mgt.MSELoss(reduction=reduction)(x, y),
                           torch.nn.MSELoss(reduction=reduction)(x, y))


# --- autograd checks, opcheck ------------------------------------------------------------

def _leaf(shape, seed):
    return make(shape, torch.float64, seed).requires_grad_()


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("shapes", [([3, 4], [3, 4]), ([3, 1], [3, 4]), ([4], [2, 3, 4])],
                         ids=str)
def test_gradcheck_and_gradgradcheck(reduction, shapes):
    x, y = _leaf(shapes[0], 1), _leaf(shapes[1], 2)
    with pytest.warns(UserWarning) if shapes[0] != shapes[1] else contextlib.nullcontext():
        assert torch.autograd.gradcheck(lambda a, b: mgt.mse_loss(a, b, reduction), (x, y))
        assert torch.autograd.gradgradcheck(lambda a, b: mgt.mse_loss(a, b, reduction), (x, y))


def test_backward_op_gradchecks_with_broadcasting():
    grad, x, y = _leaf([3, 1], 1), _leaf([3, 4], 2), _leaf([4], 3)
    op = torch.ops.mse_grad_triton.mse_loss_backward
    assert torch.autograd.gradcheck(lambda g, a, b: op(g, a, b, 1), (grad, x, y))
    assert torch.autograd.gradgradcheck(lambda g, a, b: op(g, a, b, 1), (grad, x, y))
    pair = torch.ops.mse_grad_triton.mse_loss_backward_pair
    assert torch.autograd.gradcheck(lambda g, a, b: pair(g, a, b, 2), (grad, x, y))


@pytest.mark.parametrize("op,args", [
    ("mse_loss_backward", lambda: (make([], torch.float32, 1), make([3, 4], torch.float32, 2),
                                   make([3, 1], torch.float32, 3), 1)),
    ("mse_loss_backward_pair", lambda: (make([3, 4], torch.float32, 1),
                                        make([3, 4], torch.float32, 2),
                                        make([3, 4], torch.float32, 3), 0)),
    ("mse_loss", lambda: (make([3, 4], torch.float32, 2), make([3, 4], torch.float32, 3), 2)),
])
def test_opcheck(op, args):
    inputs = [a.requires_grad_() if isinstance(a, torch.Tensor) else a for a in args()]
    torch.library.opcheck(getattr(torch.ops.mse_grad_triton, op).default, inputs)


# --- torch.compile -------------------------------------------------------------------------

def test_compiled_training_step_traces_the_kernel_without_graph_breaks():
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def capture(graph_module, example_inputs):
        graphs.append(str(graph_module.code))
        return make_boxed_func(graph_module.forward)

    torch._dynamo.reset()
    model = torch.nn.Linear(6, 2)
    inputs, targets = torch.randn(10, 6), torch.randn(10, 2)

    def loss_of(model, inputs, targets):
        return mgt.mse_loss(model(inputs), targets)

    compiled = torch.compile(loss_of, fullgraph=True,
                             backend=aot_autograd(fw_compiler=capture, bw_compiler=capture))
    compiled(model, inputs, targets).backward()
    compiled_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    F.mse_loss(model(inputs), targets).backward()
    for compiled_grad, p in zip(compiled_grads, model.parameters()):
        torch.testing.assert_close(compiled_grad, p.grad)
    assert any("mse_grad_triton.mse_loss_backward" in g for g in graphs)  # in the backward


def test_compile_with_differing_shapes_has_no_graph_break():
    torch._dynamo.reset()
    x, y = make([4, 1], torch.float32, 1), make([1, 3], torch.float32, 2)
    compiled = torch.compile(lambda a, b: mgt.mse_loss(a, b, "sum"), fullgraph=True,
                             backend="aot_eager")
    a = x.clone().requires_grad_()
    compiled(a, y).backward()
    b = x.clone().requires_grad_()
    with pytest.warns(UserWarning, match="target size"):  # eager keeps PyTorch's warning
        mgt.mse_loss(b, y, "sum").backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_eager_and_traced_paths_agree(launches):
    torch._dynamo.reset()
    x, y = make([6, 5], torch.float32, 1), make([6, 5], torch.float32, 2)
    eager = [t.clone().requires_grad_() for t in (x, y)]
    traced = [t.clone().requires_grad_() for t in (x, y)]
    mgt.mse_loss(*eager).backward()
    assert len(launches) == 1  # the eager Function ran the kernel
    torch.compile(mgt.mse_loss, fullgraph=True, backend="aot_eager")(*traced).backward()
    assert len(launches) == 2  # so did the traced custom op
    for a, b in zip(eager, traced):
        assert torch.equal(a.grad, b.grad)


# --- torch.func ----------------------------------------------------------------------------

@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_torch_func_transforms_agree_with_pytorch(reduction):
    from torch import func

    x, y = make([3, 4], torch.float64, 1), make([3, 4], torch.float64, 2)

    def ours(a, b):
        return mgt.mse_loss(a, b, reduction).sum()

    def stock(a, b):
        return F.mse_loss(a, b, reduction=reduction).sum()

    for transform in (lambda f: func.grad(f, argnums=(0, 1)),
                      lambda f: func.vmap(func.grad(f)),
                      lambda f: func.jacrev(f, argnums=(0, 1)),
                      lambda f: func.hessian(f)):
        torch.testing.assert_close(transform(ours)(x, y), transform(stock)(x, y))
    tangents = (make([3, 4], torch.float64, 3), make([3, 4], torch.float64, 4))
    value, tangent = func.jvp(ours, (x, y), tangents)
    expected_value, expected_tangent = func.jvp(stock, (x, y), tangents)
    torch.testing.assert_close(value, expected_value)
    torch.testing.assert_close(tangent, expected_tangent)
    assert tangent.abs().item() > 0  # not the silent zero tangent of a missing jvp


def test_forward_mode_ad_agrees_with_pytorch():
    import torch.autograd.forward_ad as fwAD

    x, y, dx = (make([5], torch.float64, i) for i in range(3))
    with fwAD.dual_level():
        ours = fwAD.unpack_dual(mgt.mse_loss(fwAD.make_dual(x, dx), y)).tangent
        stock = fwAD.unpack_dual(F.mse_loss(fwAD.make_dual(x, dx), y)).tangent
    torch.testing.assert_close(ours, stock)


# --- one pass, broadcasting ---------------------------------------------------------------

def test_one_pass_writes_both_gradients(launches):
    x, y = make([5, 6], torch.float32, 1).requires_grad_(), \
        make([5, 6], torch.float32, 2).requires_grad_()
    mgt.mse_loss(x, y).backward()
    assert _writes_both(launches) == [True]  # one launch, which also wrote both gradients
    x_ref, y_ref = x.detach().clone().requires_grad_(), y.detach().clone().requires_grad_()
    F.mse_loss(x_ref, y_ref).backward()
    assert_ulp_close(x.grad, x_ref.grad.double())
    assert_ulp_close(y.grad, y_ref.grad.double())


@pytest.mark.parametrize("which", ["input", "target"])
def test_one_gradient_when_only_one_is_needed(which, launches):
    x = make([5, 6], torch.float32, 1).requires_grad_(which == "input")
    y = make([5, 6], torch.float32, 2).requires_grad_(which == "target")
    mgt.mse_loss(x, y, "sum").backward()
    assert _writes_both(launches) == [False]
    grad = (x if which == "input" else y).grad
    expected = 2 * (x.detach() - y.detach()).double() * (1 if which == "input" else -1)
    assert_ulp_close(grad, expected)


@pytest.mark.parametrize("shapes", [([4, 1], [4, 5]), ([5], [3, 5]), ([2, 1, 3], [1, 4, 1])],
                         ids=str)
def test_broadcast_gradients_are_reduced_like_pytorch(shapes):
    x, y = make(shapes[0], torch.float32, 1), make(shapes[1], torch.float32, 2)
    ours = [x.clone().requires_grad_(), y.clone().requires_grad_()]
    stock = [x.clone().requires_grad_(), y.clone().requires_grad_()]
    with pytest.warns(UserWarning, match="different to the input size"):
        mgt.mse_loss(*ours).backward()
    with pytest.warns(UserWarning, match="different to the input size"):
        F.mse_loss(*stock).backward()
    for mine, theirs in zip(ours, stock):
        assert mine.grad.shape == theirs.grad.shape
        torch.testing.assert_close(mine.grad, theirs.grad)


# --- enable() / disable() -----------------------------------------------------------------

def _stock_backward_runs_kernel(launches) -> bool:
    before = len(launches)
    x = make([4, 5], torch.float32, 1).requires_grad_()
    torch.nn.MSELoss()(x, make([4, 5], torch.float32, 2)).backward()
    return len(launches) > before


def test_enable_disable_and_enable_twice(launches, override):
    assert not _stock_backward_runs_kernel(launches)
    mgt.enable(devices=("cpu",))
    mgt.enable(devices=("cpu",))  # harmless
    assert mgt.enabled_devices() == ("cpu",)
    assert mgt.enabled_override("cpu") == override and mgt.enabled_override("cuda") is None
    assert _stock_backward_runs_kernel(launches)
    out = torch.empty(4, 5)
    torch.ops.aten.mse_loss_backward.grad_input(torch.tensor(1.0), torch.ones(4, 5),
                                                torch.zeros(4, 5), 2, grad_input=out)
    assert _writes_both(launches)[-1] is False and bool((out == 2).all())
    mgt.disable()
    assert mgt.enabled_devices() == () and mgt.enabled_override("cpu") is None
    assert not _stock_backward_runs_kernel(launches)


def test_enabled_context_restores_the_previous_state(launches):
    mgt.enable(devices=("cuda",))
    with mgt.enabled(devices=("cpu",)):
        assert _stock_backward_runs_kernel(launches)
    assert mgt.enabled_devices() == ("cuda",)
    assert not _stock_backward_runs_kernel(launches)


def test_default_enable_leaves_cpu_alone(launches):
    mgt.enable()
    assert mgt.enabled_devices() == ("npu", "cuda")
    assert not _stock_backward_runs_kernel(launches)


def test_enable_honours_the_tuned_crossover(launches, tuned_crossover, override):
    tuned_crossover({"float32": 100})
    with mgt.enabled(devices=("cpu",)):
        small = make([64, 1], torch.float32, 1).requires_grad_()
        torch.nn.MSELoss()(small, make([64, 1], torch.float32, 2)).backward()
        assert len(launches) == 0  # below the crossover: PyTorch's own kernel
        # A broadcast below the crossover takes the launcher's checked path, to the same end.
        broadcast = torch.ops.aten.mse_loss_backward(torch.tensor(1.0), small.detach(),
                                                     make([1, 1], torch.float32, 3), 1)
        assert len(launches) == 0
        large = make([20, 10], torch.float32, 1).requires_grad_()
        target = make([20, 10], torch.float32, 2)
        torch.nn.MSELoss()(large, target).backward()
        assert len(launches) == 1
    expected = torch.ops.aten.mse_loss_backward(torch.tensor(1.0), small.detach(),
                                                make([64, 1], torch.float32, 2), 1)
    torch.testing.assert_close(small.grad, expected, rtol=0, atol=0)
    torch.testing.assert_close(broadcast, torch.ops.aten.mse_loss_backward(
        torch.tensor(1.0), small.detach(), make([1, 1], torch.float32, 3), 1), rtol=0, atol=0)


@pytest.mark.parametrize("devices", [("tpu",), "cpu", ("cpu", "gpu")])
def test_enable_refuses_unknown_devices(devices):
    with pytest.raises(ValueError, match="devices"):
        mgt.enable(devices=devices)
    assert mgt.enabled_devices() == ()


def test_concurrent_backward_passes():
    pairs = [(make([6, 40], torch.float32, 2 * i).requires_grad_(),
              make([6, 40], torch.float32, 2 * i + 1)) for i in range(6)]

    def work(x, y):
        mgt.mse_loss(x, y, "sum").backward()

    threads = [threading.Thread(target=work, args=pair) for pair in pairs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for x, y in pairs:
        assert_ulp_close(x.grad, 2 * (x.detach() - y).double())


def test_enabled_blocks_compose_across_threads(launches, override):
    import threading
    a_entered, b_entered, a_left, b_checked = (threading.Event() for _ in range(4))
    seen = {}

    def thread_a():
        with mgt.enabled(devices=("cpu",)):
            a_entered.set()
            b_entered.wait(10)
        a_left.set()

    def thread_b():
        a_entered.wait(10)
        with mgt.enabled(devices=("cpu",)):
            b_entered.set()
            a_left.wait(10)
            seen["inside_after_a_left"] = mgt.enabled_devices()
            seen["kernel_ran"] = _stock_backward_runs_kernel(launches)
        b_checked.set()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert seen == {"inside_after_a_left": ("cpu",), "kernel_ran": True}
    assert mgt.enabled_devices() == ()  # both left: as before
    assert not _stock_backward_runs_kernel(launches)


def test_an_integer_target_promotes_like_stock():
    x, y = make([6], torch.float32, 1), torch.tensor([1, 2, 3, 4, 5, 6])
    ours, stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    mgt.mse_loss(ours, y).backward()
    F.mse_loss(stock, y).backward()
    torch.testing.assert_close(ours.grad, stock.grad)


def test_under_enable_the_out_variant_resizes_like_aten(override):
    grad, x, y = torch.tensor(1.0), make([3, 4], torch.float32, 1), make([3, 4], torch.float32, 2)
    expected = torch.ops.aten.mse_loss_backward(grad, x, y, 1)
    with mgt.enabled(devices=("cpu",)):
        empty = torch.empty(0)
        torch.ops.aten.mse_loss_backward.grad_input(grad, x, y, 1, grad_input=empty)
        assert empty.shape == (3, 4)
        torch.testing.assert_close(empty, expected)
        wrong = torch.empty(5)
        with pytest.warns(UserWarning, match="was resized"):
            torch.ops.aten.mse_loss_backward.grad_input(grad, x, y, 1, grad_input=wrong)
        torch.testing.assert_close(wrong, expected)


def test_below_the_crossover_the_eager_loss_is_atens_own(launches, tuned_crossover):
    tuned_crossover({"float32": 100})
    small, target = make([64, 1], torch.float32, 1), make([64, 1], torch.float32, 2)
    ours, stock = small.clone().requires_grad_(), small.clone().requires_grad_()
    loss = mgt.MSELoss()(ours, target)
    assert loss.grad_fn.name() == "MseLossBackward0"  # no Python autograd node
    loss.backward()
    torch.nn.MSELoss()(stock, target).backward()
    assert len(launches) == 0 and torch.equal(ours.grad, stock.grad)
    large = make([20, 10], torch.float32, 3).requires_grad_()
    mgt.MSELoss()(large, make([20, 10], torch.float32, 4)).backward()
    assert len(launches) == 1  # at the crossover and above: the kernel


# Operands stock aten::mse_loss_backward accepts although the kernel does not read them: it
# promotes them (or refuses them: then so must the override, with the same error).
_UNREAD_OPERANDS = {
    "int target": lambda: (torch.tensor(1.0), make([4, 5], torch.float32, 1),
                           torch.randint(0, 3, (4, 5))),
    "bool target": lambda: (torch.tensor(1.0), make([4, 5], torch.float32, 1),
                            torch.rand(4, 5) > 0.5),
    "int grad": lambda: (torch.tensor(2), make([4, 5], torch.float32, 1),
                         make([4, 5], torch.float32, 2)),
    "int self": lambda: (torch.tensor(1.0), torch.randint(0, 3, (4, 5)),
                         make([4, 5], torch.float32, 2)),
    "int self and target": lambda: (torch.tensor(1), torch.randint(0, 3, (4, 5)),
                                    torch.randint(0, 3, (4, 5))),
    "broadcast int target": lambda: (torch.tensor(1.0), make([4, 5], torch.float32, 1),
                                     torch.randint(0, 3, (4, 1))),
}


def _outcome(fn):
    """What ``fn()`` gives: its result, or the type and message of what it raised."""
    try:
        return fn()
    except Exception as error:  # noqa: BLE001  (compared with stock's, whatever it is)
        return type(error), str(error)


def _assert_same_outcome(ours, stock):
    if isinstance(stock, torch.Tensor):
        assert isinstance(ours, torch.Tensor), ours
        assert ours.dtype == stock.dtype and ours.shape == stock.shape
        torch.testing.assert_close(ours, stock, rtol=0, atol=0)
    else:
        assert ours == stock


@pytest.mark.parametrize("side", ["below the crossover", "above it"])
@pytest.mark.parametrize("variant", ["functional", "out"])
@pytest.mark.parametrize("operands", list(_UNREAD_OPERANDS))
def test_under_enable_dtypes_the_kernel_does_not_read_get_stocks_result(
        launches, tuned_crossover, override, side, variant, operands):
    if side == "below the crossover":
        tuned_crossover({"float32": 1 << 20, "float16": 1 << 20, "bfloat16": 1 << 20})
    grad, x, y = _UNREAD_OPERANDS[operands]()

    def call():
        if variant == "functional":
            return torch.ops.aten.mse_loss_backward(grad, x, y, 1)
        out = torch.empty(torch.broadcast_shapes(grad.shape, x.shape, y.shape))
        return torch.ops.aten.mse_loss_backward.grad_input(grad, x, y, 1, grad_input=out)

    stock = _outcome(call)
    with mgt.enabled(devices=("cpu",)):
        ours = _outcome(call)
    _assert_same_outcome(ours, stock)
    assert len(launches) == 0


@pytest.mark.parametrize("target_dtype", [torch.int64, torch.bool])
def test_stock_training_with_an_integer_target_under_enable(launches, override, target_dtype):
    x = make([6, 3], torch.float32, 1)
    target = (torch.rand(6, 3) > 0.5) if target_dtype == torch.bool \
        else torch.randint(0, 3, (6, 3))
    ours, stock = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.nn.MSELoss()(stock, target).backward()
    with mgt.enabled(devices=("cpu",)):
        torch.nn.MSELoss()(ours, target).backward()
    torch.testing.assert_close(ours.grad, stock.grad, rtol=0, atol=0)


@pytest.mark.parametrize("side", ["below the crossover", "above it"])
@pytest.mark.parametrize("variant", ["functional", "out"])
@pytest.mark.parametrize("reduction", [3, -1])
def test_under_enable_an_unknown_reduction_raises_at_every_size(
        launches, tuned_crossover, override, side, variant, reduction):
    if side == "below the crossover":
        tuned_crossover({"float32": 1 << 20})
    grad, x, y = torch.tensor(1.0), make([4, 5], torch.float32, 1), make([4, 5], torch.float32, 2)
    out = torch.full((4, 5), 7.0)
    with mgt.enabled(devices=("cpu",)), pytest.raises(ValueError, match="reduction must be"):
        if variant == "functional":
            torch.ops.aten.mse_loss_backward(grad, x, y, reduction)
        else:
            torch.ops.aten.mse_loss_backward.grad_input(grad, x, y, reduction, grad_input=out)
    assert len(launches) == 0 and bool((out == 7).all())  # nothing ran, nothing written
