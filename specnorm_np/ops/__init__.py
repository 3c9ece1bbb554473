"""Array operations shared by the layers (device-agnostic: the array module follows the data).

* :mod:`~specnorm_np.ops.im2col`: im2col / col2im and the naive loop convolution (the oracle);
* :mod:`~specnorm_np.ops.conv`: the convolution's products, the reference route and the fast
  (chunked, flipped-kernel) route beside it;
* :mod:`~specnorm_np.ops.workspace`: scratch arrays reused between calls.
"""

from specnorm_np.ops.conv import (
    conv2d,
    conv2d_input_grad,
    conv2d_input_grad_reference,
    conv2d_reference,
    conv2d_weight_grad,
    conv2d_weight_grad_reference,
)
from specnorm_np.ops.im2col import (
    as_pair,
    col2im,
    conv2d_naive,
    conv_output_hw,
    im2col,
    pad_spatial,
)
from specnorm_np.ops.workspace import Workspace

__all__ = [
    "Workspace",
    "as_pair",
    "col2im",
    "conv2d",
    "conv2d_input_grad",
    "conv2d_input_grad_reference",
    "conv2d_naive",
    "conv2d_reference",
    "conv2d_weight_grad",
    "conv2d_weight_grad_reference",
    "conv_output_hw",
    "im2col",
    "pad_spatial",
]
