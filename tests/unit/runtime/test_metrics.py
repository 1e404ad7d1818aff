from __future__ import annotations

import numpy as np

from bridge.runtime.metrics import SQNR_EXACT_DB, compare, cosine, lsb_error, sqnr_db


def test_sqnr_known_value() -> None:
    ref = np.ones(100)
    out = ref + 0.1  # noise power 0.01 per element, signal 1 → 20 dB
    assert abs(sqnr_db(ref, out) - 20.0) < 1e-9
    assert sqnr_db(ref, ref) == SQNR_EXACT_DB


def test_cosine_and_lsb() -> None:
    a = np.array([1.0, 0.0])
    assert cosine(a, np.array([0.0, 1.0])) == 0.0
    assert abs(cosine(a, 2 * a) - 1.0) < 1e-12
    mx, p99 = lsb_error(np.zeros(100), np.r_[np.zeros(99), 0.3], scale=0.1)
    assert abs(mx - 3.0) < 1e-9 and p99 < mx


def test_compare_fails_below_floor_and_on_nan() -> None:
    ref = np.linspace(-1, 1, 50).reshape(5, 10)
    good = compare(ref, ref + 1e-6, output="y", pair=("a", "b"), min_sqnr_db=60)
    assert good.passed and good.top1 == 1.0
    bad = compare(ref, ref + 0.5, output="y", pair=("a", "b"), min_sqnr_db=60)
    assert not bad.passed and bad.sqnr_db < 10
    nan = compare(ref, np.full_like(ref, np.nan), output="y", pair=("a", "b"), min_sqnr_db=0)
    assert not nan.passed and "non-finite" in nan.note
    shape = compare(ref, ref.T, output="y", pair=("a", "b"), min_sqnr_db=0)
    assert not shape.passed and "shape mismatch" in shape.note
