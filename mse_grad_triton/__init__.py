"""mse-grad-triton: the MSE-loss backward pass (aclnnMseLossBackward) as one fused Triton kernel.

    from mse_grad_triton import mse_loss_backward
    grad_input = mse_loss_backward(grad_output, self, target, reduction="mean")

Runs on Ascend NPUs (triton-ascend + torch_npu), on CUDA GPUs (upstream Triton) and on CPU
tensors through Triton's interpreter. From PyTorch: ``mse_loss``/``MSELoss`` (backward runs the
kernel), the ``torch.ops.mse_grad_triton`` ops, or ``enable()`` for unmodified code.
"""

from . import triton_install

triton_install.check()  # before anything imports triton: a mixed install crashes inside it

from .autotune import tune_on_first_use  # noqa: E402
from .launcher import explain, mse_loss_backward, mse_loss_backward_pair  # noqa: E402
from .torch_ops import (  # noqa: E402
    MSELoss,
    disable,
    enable,
    enabled,
    enabled_devices,
    enabled_override,
    mse_loss,
)

__all__ = ["MSELoss", "disable", "enable", "enabled", "enabled_devices", "enabled_override",
           "explain", "mse_loss", "mse_loss_backward", "mse_loss_backward_pair",
           "tune_on_first_use"]
__version__ = "0.1.0"
