"""Placeholder: being written (see issue #3)."""

from specnorm_np.nn.module import Module

__all__ = ["Flatten"]


class Flatten(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("Flatten is being written")
