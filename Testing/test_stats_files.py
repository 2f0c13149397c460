"""spinemorph.stats and spinemorph.files: known answers."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy import stats as sps

from spinemorph.files import sha256_file
from spinemorph.stats import bland_altman, pearson, ratio


def test_ratio():
    assert ratio(3, 4) == 0.75
    assert math.isnan(ratio(1, 0)) and math.isnan(ratio(0, 0))


def test_bland_altman_known_values():
    ba = bland_altman([10.0, 12.0, 14.0, 20.0], [9.0, 12.0, 12.0, 17.0])  # differences 1, 0, 2, 3
    assert ba["n"] == 4 and ba["bias"] == pytest.approx(1.5)
    sd = math.sqrt(((1 - 1.5) ** 2 + 1.5**2 + 0.5**2 + 1.5**2) / 3)  # ddof = 1
    assert ba["sd"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(1.5 - 1.96 * sd) and ba["loa_high"] == pytest.approx(1.5 + 1.96 * sd)
    assert np.allclose(ba["diff"], [1, 0, 2, 3]) and np.allclose(ba["mean"], [9.5, 12, 13, 18.5])
    one = bland_altman([2.0], [1.0])
    assert one["bias"] == 1.0 and math.isnan(one["sd"]) and math.isnan(one["loa_low"])
    none = bland_altman([], [])
    assert none["n"] == 0 and math.isnan(none["bias"])
    with pytest.raises(ValueError, match="paired"):
        bland_altman([1, 2], [1])


def test_pearson_known_and_undefined():
    r, p = pearson([1, 2, 3, 4], [2, 4, 6, 8])
    assert r == pytest.approx(1.0) and p == pytest.approx(0.0, abs=1e-9)
    x, y = [1.0, 2.0, 4.0, 3.0, 7.0], [1.5, 1.0, 5.0, 2.0, 6.0]
    ref = sps.pearsonr(x, y)
    assert pearson(x, y) == pytest.approx((ref[0], ref[1]))
    assert all(math.isnan(v) for v in pearson([1, 1, 1], [1, 2, 3]))
    assert all(math.isnan(v) for v in pearson([1], [2]))


def test_sha256_file(tmp_path):
    data = b"SpineMorph" * 300_000  # 3 MB: several chunks
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
