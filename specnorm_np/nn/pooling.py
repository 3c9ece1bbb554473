"""Placeholder: being written (see issue #3)."""

from specnorm_np.nn.module import Module

__all__ = ["MaxPool2d","AvgPool2d","GlobalAvgPool2d"]


class MaxPool2d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("MaxPool2d is being written")


class AvgPool2d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("AvgPool2d is being written")


class GlobalAvgPool2d(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("GlobalAvgPool2d is being written")
