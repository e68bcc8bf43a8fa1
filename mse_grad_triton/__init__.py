"""mse-grad-triton: the MSE-loss backward pass (aclnnMseLossBackward) as one fused Triton kernel.

    from mse_grad_triton import mse_loss_backward
    grad_input = mse_loss_backward(grad_output, self, target, reduction="mean")

Runs on Ascend NPUs (triton-ascend + torch_npu), on CUDA GPUs (upstream Triton) and on CPU
tensors through Triton's interpreter.
"""

from .launcher import explain, mse_loss_backward

__all__ = ["explain", "mse_loss_backward"]
__version__ = "0.1.0"
