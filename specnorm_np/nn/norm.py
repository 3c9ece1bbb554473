"""Placeholder: being written (see issue #3)."""

from specnorm_np.nn.module import Module

__all__ = ["BatchNorm1d","BatchNorm2d"]


class BatchNorm1d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("BatchNorm1d is being written")


class BatchNorm2d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("BatchNorm2d is being written")
