"""Developer tooling, apart from the library a training job imports: the Ascend lowering gate
(``ascend_check``), the CUDA compile gate (``cuda_check``) and the correctness check on a
device (``check``). Each runs as ``python -m mse_grad_triton.tools.<name>`` (or ``./run``)."""
