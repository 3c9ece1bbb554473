"""specnorm_np: a pure-NumPy, autodiff-free neural-network library that reproduces
*Spectral Norm Regularization for Improving the Generalizability of Deep Learning*
(Yoshida & Miyato, 2017, arXiv:1705.10941).

Subpackages: :mod:`nn` (layers), :mod:`ops` (im2col), :mod:`spectral` (power iteration, the
regularizer, conv operator norms), :mod:`regularizers`, :mod:`adversarial`, :mod:`optim`,
:mod:`gradcheck`, :mod:`data` (CIFAR-10), :mod:`models`, :mod:`metrics`, :mod:`train`.
"""

from specnorm_np import adversarial, gradcheck, nn, ops, optim, regularizers, spectral
from specnorm_np.backend import get_array_module, gpu_available, to_device, to_numpy

__version__ = "0.1.0"

__all__ = [
    "nn",
    "ops",
    "spectral",
    "regularizers",
    "adversarial",
    "optim",
    "gradcheck",
    "get_array_module",
    "gpu_available",
    "to_device",
    "to_numpy",
    "__version__",
]
