"""Agreement statistics (ICC forms against Shrout & Fleiss's worked example, Bland–Altman, tests) and the
``spinemorph foramen compare`` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from FORAMEN3DLib.agreement import (
    anova_mean_squares,
    bland_altman,
    compare_tables,
    compare_values,
    icc_a1,
    icc_all,
    read_measurement_table,
)
from scipy import stats

from spinemorph.errors import InputError

# Shrout PE, Fleiss JL. Psychol Bull 1979;86:420-428, Table 2: 6 targets rated by 4 judges
SHROUT_FLEISS = np.array(
    [
        [9, 2, 5, 8],
        [6, 1, 3, 2],
        [8, 4, 6, 8],
        [7, 1, 2, 6],
        [10, 5, 6, 9],
        [6, 2, 4, 7],
    ],
    float,
)


def test_icc_shrout_fleiss_example():
    r = icc_all(SHROUT_FLEISS)
    # published values (two decimals): ICC(1,1) .17, ICC(2,1) .29, ICC(3,1) .71, ICC(1,4) .44, ICC(2,4) .62, ICC(3,4) .91
    assert r["ICC(1,1)"] == pytest.approx(0.17, abs=0.005)
    assert r["ICC(A,1)"] == pytest.approx(0.29, abs=0.005)
    assert r["ICC(C,1)"] == pytest.approx(0.71, abs=0.005)
    assert r["ICC(1,k)"] == pytest.approx(0.44, abs=0.005)
    assert r["ICC(A,k)"] == pytest.approx(0.62, abs=0.005)
    assert r["ICC(C,k)"] == pytest.approx(0.91, abs=0.005)
    ms = anova_mean_squares(SHROUT_FLEISS)  # Table 2 ANOVA: BMS 11.24, JMS 32.49, EMS 1.02, WMS 6.26
    assert ms["MSR"] == pytest.approx(11.24, abs=0.01)
    assert ms["MSC"] == pytest.approx(32.49, abs=0.01)
    assert ms["MSE"] == pytest.approx(1.02, abs=0.01)
    assert ms["MSW"] == pytest.approx(6.26, abs=0.01)
    icc, (lo, hi) = icc_a1(SHROUT_FLEISS)
    assert icc == pytest.approx(r["ICC(A,1)"])
    assert lo < icc < hi


def test_icc_a1_ci_coverage_by_simulation():
    """Two-way random model y = r_i + c_j + e_ij with population ICC(A,1) = 4 / (4 + 0.25 + 1)."""
    rng = np.random.default_rng(7)
    true = 4.0 / 5.25
    hits, n_rep = 0, 300
    for _ in range(n_rep):
        y = rng.normal(0, 2.0, (25, 1)) + rng.normal(0, 0.5, (1, 2)) + rng.normal(0, 1.0, (25, 2))
        _, (lo, hi) = icc_a1(y)
        hits += lo <= true <= hi
    assert 0.88 <= hits / n_rep <= 0.995


def test_bland_altman_pearson_wilcoxon():
    manual = np.array([10.0, 12.0, 15.0, 18.0, 20.0, 22.0, 25.0, 30.0])
    auto = manual + np.array([1.0, 0.5, 1.5, 1.0, 0.5, 1.0, 1.5, 1.0])  # +1 mm systematic, SD known
    st = compare_values(auto, manual, "foraminal_height")
    d = auto - manual
    assert st.bias == pytest.approx(1.0)
    assert st.sd_diff == pytest.approx(np.std(d, ddof=1))
    assert st.loa_low == pytest.approx(1.0 - 1.96 * np.std(d, ddof=1))
    assert st.loa_high == pytest.approx(1.0 + 1.96 * np.std(d, ddof=1))
    assert st.pearson_r == pytest.approx(stats.pearsonr(auto, manual).statistic)
    assert st.wilcoxon_p == pytest.approx(stats.wilcoxon(auto, manual).pvalue)
    assert st.wilcoxon_p < 0.05  # every difference positive
    assert st.icc_c1 > st.icc_a1  # consistency ignores the bias, absolute agreement does not
    assert st.unit == "mm" and st.mae == pytest.approx(1.0)
    same = compare_values(manual, manual, "x")
    assert same.bias == 0 and same.wilcoxon_p == 1.0 and same.icc_a1 == pytest.approx(1.0)
    ba = bland_altman([1, 2, 3], [1, 2, 4])
    assert ba["bias"] == pytest.approx(-1 / 3)
    with pytest.raises(InputError):
        compare_values([1.0], [1.0])
    with pytest.raises(InputError):
        compare_values([1.0, 2.0], [1.0, 2.0, 3.0])


def _write_table(path, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Case", "Metric", "Side", "Value", "Unit", "Flag"])
        w.writerows(rows)


def _tables(tmp_path):
    rng = np.random.default_rng(3)
    auto_rows, man_rows = [], []
    for c in range(8):
        for side in ("left", "right"):
            h, w, a = rng.uniform(12, 22), rng.uniform(5, 11), rng.uniform(80, 220)
            for metric, v, e, unit in (("foraminal_height", h, 0.6, "mm"), ("foraminal_width", w, 0.4, "mm"), ("foraminal_area", a, 8, "mm2")):
                man_rows.append([f"case{c}", metric, side, f"{v:.3f}", unit, ""])
                auto_rows.append([f"case{c}", metric, side, f"{v + rng.normal(0.2, e):.3f}", unit, ""])
    _write_table(tmp_path / "auto.csv", auto_rows)
    _write_table(tmp_path / "manual.csv", man_rows[::-1])  # order must not matter
    return tmp_path / "auto.csv", tmp_path / "manual.csv"


def test_compare_tables_pairs_by_case_metric_side(tmp_path):
    a, m = _tables(tmp_path)
    res, pairs = compare_tables(a, m)
    assert set(res) == {"foraminal_height", "foraminal_width", "foraminal_area"}
    assert all(st.n == 16 for st in res.values())
    assert res["foraminal_height"].pearson_r > 0.9
    t = read_measurement_table(a)
    assert t[("case0", "foraminal_height", "left")] == pytest.approx(float(open(a).read().splitlines()[1].split(",")[3]))
    bad = tmp_path / "bad.csv"
    bad.write_text("Case,Metric,Value\nx,foraminal_height,3\n")
    with pytest.raises(InputError, match="Side"):
        read_measurement_table(bad)


def test_cli_compare_writes_report(tmp_path):
    from spinemorph.app.cli import main

    a, m = _tables(tmp_path)
    out = tmp_path / "cmp"
    assert main(["foramen", "compare", str(a), str(m), "--out", str(out)]) == 0
    doc = json.loads((out / "agreement.json").read_text())
    assert "ICC(A,1)" in doc["icc_form"] and doc["metrics"]["foraminal_area"]["n"] == 16
    for name in ("agreement.csv", "pairs.csv", "agreement_foraminal_height.png", "agreement_foraminal_width.png"):
        assert (out / name).stat().st_size > 100
    assert main(["foramen", "compare", str(a), str(m), "--out", str(out)]) == 1  # exists, no --overwrite
    assert main(["foramen", "compare", str(a), str(m), "--out", str(out), "--overwrite"]) == 0
    assert main(["foramen", "compare", str(tmp_path / "missing.csv"), str(m), "--out", str(out), "--overwrite"]) == 1


def test_metric_with_one_pair_is_recorded_as_skipped(tmp_path, caplog):
    """A metric with fewer than 2 paired values gets no statistics but is listed (with the reason) in the outputs."""
    from spinemorph.app.cli import main

    a, m = _tables(tmp_path)
    for path in (a, m):  # one posterior disc height, for case0 only
        with open(path, "a", newline="") as fh:
            csv.writer(fh).writerow(["case0", "posterior_disc_height", "", "7.5" if path == a else "7.0", "mm", ""])
    with caplog.at_level("WARNING"):
        res, pairs = compare_tables(a, m)
    assert "posterior_disc_height" not in res and len(pairs["posterior_disc_height"][1]) == 1
    assert "posterior_disc_height skipped" in caplog.text
    out = tmp_path / "cmp"
    assert main(["foramen", "compare", str(a), str(m), "--out", str(out)]) == 0
    doc = json.loads((out / "agreement.json").read_text())
    assert doc["skipped"] == {"posterior_disc_height": {"n": 1, "reason": "only 1 paired value(s); agreement statistics need at least 2"}}
    assert set(doc["metrics"]) == {"foraminal_height", "foraminal_width", "foraminal_area"}
    with open(out / "agreement.csv", newline="") as fh:
        rows = {r["metric"]: r for r in csv.DictReader(fh)}
    assert rows["posterior_disc_height"]["n"] == "1" and rows["posterior_disc_height"]["note"].startswith("skipped")
    assert rows["posterior_disc_height"]["bias"] == ""


def test_compare_reads_manual_reference_json(tmp_path):
    """The manual reference JSON (layout of SPIDER foramen_manual.json) pairs with a measure CSV whose case names
    carry a suffix (18_t2_SPACE <-> 18); mean absolute (percentage) differences are reported."""
    import json

    from FORAMEN3DLib.agreement import compare_tables, read_manual_json

    man = {
        str(c): {
            "left": {"height_mm": 20.0 + c, "width_mm": 8.0 + 0.1 * c, "area_mm2": 150.0 + c},
            "right": {"height_mm": 19.0 + c, "width_mm": 9.0, "area_mm2": 160.0},
            "posterior_disc_height_mm": 8.0,
            "frame": {},
        }
        for c in (1, 2, 3)
    }
    mp = tmp_path / "manual.json"
    mp.write_text(json.dumps(man))
    tab = read_manual_json(mp)
    assert tab[("2", "foraminal_height", "left")] == 22.0 and tab[("3", "posterior_disc_height", "midline")] == 8.0
    rows = [["Case", "Metric", "Side", "Value", "Unit", "Flag", "QC"]]
    for c in (1, 2, 3):
        for side, (h, w, a) in {"left": (21.0 + c, 8.0 + 0.1 * c, 150.0 + c), "right": (19.0 + c, 9.5, 176.0)}.items():
            rows += [[f"{c}_t2_SPACE", "foraminal_height", side, h, "mm", "", "ok"],
                     [f"{c}_t2_SPACE", "foraminal_width", side, w, "mm", "", "ok"],
                     [f"{c}_t2_SPACE", "foraminal_area", side, a, "mm2", "", "review"]]
    ap = tmp_path / "auto.csv"
    ap.write_text("\n".join(",".join(str(x) for x in r) for r in rows) + "\n")
    res, pairs = compare_tables(ap, mp)
    assert res["foraminal_height"].n == 6
    assert res["foraminal_height"].mae == pytest.approx(0.5)  # +1 on left, 0 on right
    assert res["foraminal_width"].mae == pytest.approx(0.25)
    assert res["foraminal_area"].mean_abs_pct == pytest.approx(100 * 16 / 160 / 2)
