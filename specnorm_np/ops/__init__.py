"""Array operations shared by the layers (device-agnostic: the array module follows the data)."""

from specnorm_np.ops.im2col import (
    as_pair,
    col2im,
    conv2d_naive,
    conv_output_hw,
    im2col,
    pad_spatial,
    workspace_buffer,
)

__all__ = [
    "as_pair",
    "col2im",
    "conv2d_naive",
    "conv_output_hw",
    "im2col",
    "pad_spatial",
    "workspace_buffer",
]
