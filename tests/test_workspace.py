"""Workspace (specnorm_np.ops.workspace): reused scratch arrays that never leak old values."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np.ops import Workspace


def test_empty_is_reused_for_the_same_shape_dtype_and_device(backend):
    workspace = Workspace()
    like = backend.asarray(np.zeros(1))
    a = workspace.empty("a", (2, 3), np.float32, like)
    assert a.dtype == np.float32 and tuple(a.shape) == (2, 3)
    assert workspace.empty("a", (2, 3), np.float32, like) is a
    assert workspace.empty("a", (3, 2), np.float32, like) is not a
    b = workspace.empty("a", (3, 2), np.float64, like)
    assert b.dtype == np.float64
    assert workspace.arrays() == {"a": b}
    workspace.clear()
    assert workspace.arrays() == {}


def test_zeros_with_is_zero_outside_the_region_after_any_sequence_of_regions(backend, rng):
    """Regions of different place and stride on one name: the rest is always zero."""
    workspace = Workspace()
    shape = (3, 7, 6, 2)
    regions = [
        (slice(1, 6), slice(1, 5), slice(None)),   # a padded interior
        (slice(0, 7, 2), slice(1, 6, 2), slice(None)),  # a dilated grid
        (slice(1, 6), slice(1, 5), slice(None)),   # back to the first
        (slice(2, 7), slice(0, 4), slice(None)),   # same size as the first, shifted
        (slice(0, 0), slice(1, 5), slice(None)),   # nothing at all
    ]
    for region in regions * 2:
        for m in (3, 1):  # a full chunk, then a short last chunk of the same buffer
            sizes = [len(range(*s.indices(d))) for s, d in zip(region, shape[1:])]
            values = rng.standard_normal((m, *sizes))
            out = backend.host(workspace.zeros_with("x", shape, region, backend.asarray(values)))
            expected = np.zeros((m, *shape[1:]))
            expected[(slice(None), *region)] = values
            np.testing.assert_array_equal(out, expected)


def test_zeros_with_reuses_memory_for_the_same_region(rng):
    workspace = Workspace()
    region = (slice(1, 3), slice(None))
    first = workspace.zeros_with("x", (2, 4, 3), region, rng.standard_normal((2, 2, 3)))
    again = workspace.zeros_with("x", (2, 4, 3), region, rng.standard_normal((1, 2, 3)))
    assert np.shares_memory(first, again)
    other = workspace.zeros_with("x", (2, 4, 3), (slice(0, 2), slice(None)),
                                 rng.standard_normal((2, 2, 3)))
    assert not other[:, 2:].any()  # the old rows 2 of the first region were cleared


def test_zeros_with_rejects_a_region_of_the_wrong_rank():
    with pytest.raises(ValueError, match="Workspace.zeros_with: region must be 2 slices"):
        Workspace().zeros_with("x", (1, 4, 3), (slice(None),), np.zeros((1, 4, 3)))


def test_a_workspace_in_use_can_be_deep_copied_and_pickled(rng):
    """Models are deep-copied (metrics' float64 clones) and pickled (parallel runs)."""
    import copy
    import pickle

    workspace = Workspace()
    workspace.empty("a", (2, 3), np.float32, np.zeros(1))
    workspace.zeros_with("b", (1, 4, 3), (slice(1, 3), slice(None)), rng.standard_normal((1, 2, 3)))
    for clone in (copy.deepcopy(workspace), pickle.loads(pickle.dumps(workspace))):
        assert clone.arrays().keys() == {"a", "b"}
        np.testing.assert_array_equal(clone.arrays()["b"], workspace.arrays()["b"])
        assert clone.empty("a", (2, 3), np.float32, np.zeros(1)) is clone.arrays()["a"]
