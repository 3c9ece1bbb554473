"""Shared fixtures.

``backend`` runs a test twice: once on NumPy and once on the strict CuPy-like test backend
(:mod:`specnorm_np.testing.strict`), so that a stray ``np.`` call on device data fails in CI even
without a GPU. Use ``backend.asarray(host_array)`` for inputs, ``backend.to(model)`` for models
and ``backend.host(array)`` to bring results back for comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from specnorm_np.backend import gpu_available, to_numpy
from specnorm_np.testing import strict


@dataclass
class Backend:
    name: str
    xp: Any

    def asarray(self, host: Any, dtype: Any = None) -> Any:
        host = np.asarray(host, dtype=dtype)
        return host.copy() if self.name == "numpy" else strict.asarray(host)

    def to(self, model: Any) -> Any:
        return model if self.name == "numpy" else model.to("gpu", module=strict.xp)

    @staticmethod
    def host(array: Any) -> np.ndarray:
        return to_numpy(array)


@pytest.fixture(params=["numpy", "strict"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return Backend("numpy", np) if request.param == "numpy" else Backend("strict", strict.xp)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="no usable CUDA device/CuPy on this machine (GPU tests skipped)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
