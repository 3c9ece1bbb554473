"""Layers with explicit forward and backward passes (channels-last, see DESIGN.md)."""

from specnorm_np.nn._checks import NonFiniteError
from specnorm_np.nn.activations import LeakyReLU, ReLU
from specnorm_np.nn.conv import Conv2d
from specnorm_np.nn.dropout import Dropout
from specnorm_np.nn.linear import Linear
from specnorm_np.nn.losses import SoftmaxCrossEntropy, log_softmax
from specnorm_np.nn.module import Module, Parameter, Sequential
from specnorm_np.nn.norm import BatchNorm1d, BatchNorm2d
from specnorm_np.nn.pooling import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from specnorm_np.nn.shape import Flatten

__all__ = [
    "Module", "Parameter", "Sequential",
    "Linear", "Conv2d",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
    "BatchNorm1d", "BatchNorm2d",
    "ReLU", "LeakyReLU", "Dropout", "Flatten",
    "SoftmaxCrossEntropy", "log_softmax",
    "NonFiniteError",
]
