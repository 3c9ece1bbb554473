"""Placeholder: being written (see issue #3)."""

from specnorm_np.nn.module import Module

__all__ = ["Conv2d"]


class Conv2d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("Conv2d is being written")
