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
from threadpoolctl import threadpool_limits

from specnorm_np.backend import gpu_available, to_numpy
from specnorm_np.testing import strict

try:  # property-based tests: few, small, and the same examples in every run (deterministic CI)
    from hypothesis import HealthCheck, settings
except ImportError:  # only the property tests need it (the dev extra installs it)
    pass
else:
    settings.register_profile(
        "specnorm_np", max_examples=30, deadline=None, derandomize=True, database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("specnorm_np")


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


@pytest.fixture(scope="session", autouse=True)
def single_threaded_blas() -> Any:
    """Run the suite with one BLAS thread.

    Test arrays are tiny, so threads buy nothing, and on a busy shared machine a multi-threaded
    BLAS spinning on an oversubscribed core made a 100-image convolution step ~100x slower
    (0.7 s instead of 5 ms, measured). Code that wants threads (the benchmark) sets its own
    limit inside this one.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


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


@pytest.fixture(scope="session")
def kernel_path(tmp_path_factory: pytest.TempPathFactory):
    """A Jupyter data directory holding one kernel spec, :data:`NOTEBOOK_KERNEL`, that runs the
    interpreter running pytest (so a stale user-level ``python3`` spec cannot send notebooks to
    another environment); set ``JUPYTER_PATH`` to it."""
    import json
    import sys

    pytest.importorskip("ipykernel")
    root = tmp_path_factory.mktemp("jupyter")
    spec_dir = root / "kernels" / NOTEBOOK_KERNEL
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": f"specnorm_np tests ({sys.executable})", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    return root


#: the name of the kernel spec written by the ``kernel_path`` fixture
NOTEBOOK_KERNEL = "specnorm-np-test"
