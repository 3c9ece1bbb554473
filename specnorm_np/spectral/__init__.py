"""Spectral norms of weights: power iteration, the paper's regularizer, conv operator norms and
spectral normalization.

* :mod:`~specnorm_np.spectral.views`: ``as_matrix`` / ``from_matrix`` (the paper's matrix view)
  and ``named_weights`` (which parameters regularizers act on, under which names).
* :mod:`~specnorm_np.spectral.power_iteration`: ``power_iteration``, ``top_singular_triplet``
  and the paper's printed ``literal_algorithm1`` (a teaching exhibit).
* :mod:`~specnorm_np.spectral.regularizer`: ``SpectralNormRegularizer`` (λ/2)·Σσ².
* :mod:`~specnorm_np.spectral.conv_operator`: the true operator norm of a convolution.
* :mod:`~specnorm_np.spectral.normalization`: ``SpectralNorm``, the SN-GAN wrapper W/σ(W).
* :mod:`~specnorm_np.spectral.bounds`: ``conv_operator_bounds``, a certified interval
  [lower, upper] for the operator norm of a zero-padded, strided convolution (the circular
  embedding and the per-frequency bounds are in :mod:`~specnorm_np.spectral.circular`).
* :mod:`~specnorm_np.spectral.lipschitz`: ``lipschitz_upper_bound`` (certified, per layer and
  for the network) and ``local_lipschitz`` (σ(J(x)) measured at data points).
* :mod:`~specnorm_np.spectral.robustness`: ``certified_radius``, ``certified_accuracy``.
"""

from specnorm_np.spectral.bounds import OperatorBounds, conv_operator_bounds
from specnorm_np.spectral.conv_operator import (
    conv_as_dense_matrix,
    conv_as_linear_operator,
    conv_operator_norm,
    conv_power_iteration,
    conv_singular_values_fft,
    layer_spectra,
)
from specnorm_np.spectral.lipschitz import (
    LayerBound,
    NetworkBound,
    lipschitz_upper_bound,
    local_lipschitz,
)
from specnorm_np.spectral.normalization import SpectralNorm
from specnorm_np.spectral.power_iteration import (
    literal_algorithm1,
    power_iteration,
    random_unit_vector,
    top_singular_triplet,
)
from specnorm_np.spectral.regularizer import SpectralNormRegularizer, SpectralState
from specnorm_np.spectral.robustness import certified_accuracy, certified_radius, logit_margins
from specnorm_np.spectral.views import as_matrix, from_matrix, named_weights

__all__ = [
    "as_matrix",
    "from_matrix",
    "named_weights",
    "power_iteration",
    "top_singular_triplet",
    "literal_algorithm1",
    "random_unit_vector",
    "SpectralNormRegularizer",
    "SpectralState",
    "conv_power_iteration",
    "conv_operator_norm",
    "conv_singular_values_fft",
    "conv_as_dense_matrix",
    "conv_as_linear_operator",
    "layer_spectra",
    "SpectralNorm",
    "OperatorBounds",
    "conv_operator_bounds",
    "LayerBound",
    "NetworkBound",
    "lipschitz_upper_bound",
    "local_lipschitz",
    "logit_margins",
    "certified_radius",
    "certified_accuracy",
]
