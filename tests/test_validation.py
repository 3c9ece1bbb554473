"""The shared argument checks (specnorm_np._validation): one wording, values in plain form."""

from __future__ import annotations

import numpy as np
import pytest

from specnorm_np._validation import (
    as_pair,
    check_choice,
    check_float_dtype,
    check_int,
    check_number,
)


def test_check_int_accepts_integers_and_names_owner_argument_expectation_and_value():
    assert check_int(3, "width", "Model", minimum=2) == 3
    assert type(check_int(np.int64(4), "width", "Model")) is int
    for bad in (1, 2.0, True, "3", None):
        with pytest.raises(ValueError, match=f"^Model: width must be an int >= 2, got {bad!r}$"):
            check_int(bad, "width", "Model", minimum=2)
    with pytest.raises(ValueError, match=r"^f: k must be an int in \[0, 3\], got 4$"):
        check_int(4, "k", "f", minimum=0, maximum=3)


def test_check_number_refuses_nan_inf_bools_and_out_of_range_values():
    assert check_number(np.float32(0.5), "p", "Dropout", minimum=0, maximum=1) == 0.5
    assert check_number(0, "lam", "R", minimum=0) == 0.0
    for bad in (float("nan"), float("inf"), True, "0.1", None, np.ones(1)):
        with pytest.raises(ValueError, match="^R: lam must be a finite number >= 0, got "):
            check_number(bad, "lam", "R", minimum=0)
    with pytest.raises(ValueError,
                       match=r"^Dropout: p must be a finite number in \[0, 1\), got 1$"):
        check_number(1, "p", "Dropout", minimum=0, maximum=1, open_high=True)
    with pytest.raises(ValueError, match="^g: eps must be a finite number > 0, got 0.0$"):
        check_number(0.0, "eps", "g", minimum=0, open_low=True)


def test_check_choice_as_pair_and_float_dtype():
    assert check_choice("fast", "implementation", "Conv2d", ("fast", "reference")) == "fast"
    with pytest.raises(ValueError, match="^Conv2d: implementation must be one of 'fast', "
                                         "'reference', got 'slow'$"):
        check_choice("slow", "implementation", "Conv2d", ("fast", "reference"))
    assert as_pair(3, "stride", "op", 1) == (3, 3) and as_pair([1, 2], "stride", "op", 1) == (1, 2)
    for bad in (0, (1, 0), (1, 2, 3), 1.5, (True, 1)):
        with pytest.raises(ValueError, match="^op: stride must be an int >= 1 or a pair"):
            as_pair(bad, "stride", "op", 1)
    assert check_float_dtype("float32", "Linear") == np.float32
    for bad in (np.int32, bool, None, "not a dtype", object):
        with pytest.raises(ValueError, match="^Linear: dtype must be a floating-point dtype"):
            check_float_dtype(bad, "Linear")
