"""One nested comparison for results that two code paths must agree on (fleet vs single pass,
replay vs evaluate): dicts by key, sequences by position, NaN equal to NaN, floats exact or within
``abs_tol``. A failure names the path of the first differing value."""
from __future__ import annotations

import math

import pytest


def assert_same(a, b, path: str = "", abs_tol: float = 0.0) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}", abs_tol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]", abs_tol)
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    elif isinstance(a, float) and abs_tol:
        assert b == pytest.approx(a, abs=abs_tol), path
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"
