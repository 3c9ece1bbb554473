"""specnorm_np: a pure-NumPy, autodiff-free neural-network library that reproduces
*Spectral Norm Regularization for Improving the Generalizability of Deep Learning*
(Yoshida & Miyato, 2017, arXiv:1705.10941).
"""

from specnorm_np import nn
from specnorm_np.backend import get_array_module, gpu_available, to_device, to_numpy

__version__ = "0.1.0"

__all__ = ["nn", "get_array_module", "gpu_available", "to_device", "to_numpy", "__version__"]
