"""Placeholder: being written (see issue #3)."""

from specnorm_np.nn.module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("Dropout is being written")
