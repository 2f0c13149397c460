"""The documented command on the real SPIDER T2 SPACE label maps against the manual reader (foramen_manual.json):
every mask is routed as a label map (never segmented), the agreement stays at the level recorded in
docs/foramen_method.md §7, and no value outside the plausibility band is left without QC review.
Skips without the SPIDER data (``spider_root`` fixture)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

torch.set_num_threads(1)

CASES = ("18", "50", "65", "98")


@pytest.fixture(scope="module")
def measured_dir(spider_root, tmp_path_factory):
    import FORAMEN3DLib.segment3d as seg3d

    from spinemorph.app.cli import main

    out = tmp_path_factory.mktemp("spider_foramen")
    orig = seg3d.segment_volume
    seg3d.segment_volume = lambda *a, **k: pytest.fail("a SPIDER label map was sent to the segmenter")
    try:
        for c in CASES:
            mask = spider_root / "masks" / f"{c}_t2_SPACE.mha"
            assert main(["foramen", "measure", str(mask), "--out", str(out / c), "--no-meshes"]) == 0
    finally:
        seg3d.segment_volume = orig
    rows = []
    for c in CASES:
        with open(out / c / "measurements.csv", newline="") as f:
            rows += list(csv.DictReader(f))
    with open(out / "auto.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_spider_masks_routed_as_label_maps(measured_dir):
    schemes = {c: json.loads((measured_dir / c / "measurements.json").read_text())["label_map"] for c in CASES}
    assert schemes["98"]["L4"] == 23 and schemes["98"]["L5"] == 24  # scheme B
    assert all(schemes[c]["L4"] == 2 and schemes[c]["L4-5 disc"] == 202 for c in ("18", "50", "65"))  # scheme A


def test_agreement_with_manual_reader(measured_dir, spider_root):
    from FORAMEN3DLib.agreement import compare_tables

    res, _ = compare_tables(measured_dir / "auto.csv", spider_root / "foramen_manual.json")
    # recorded in docs/foramen_method.md §7 (height 2.21 mm, width 1.02 mm, area 10.1 %, ICC(A,1) width 0.88, area
    # 0.91, with the SAP face = L5 contour behind the notch that faces anteriorly, no slope cut); the target of issue
    # 14 is 1.0 mm / 1.0 mm / 10 %: missed (plane choice; height). These bounds guard against regressions; they are
    # not a claim of agreement. A 45° slope cut on the SAP face gave width 1.78 mm, ICC 0.30.
    assert res["foraminal_height"].n == 8
    assert res["foraminal_height"].mae <= 2.3
    assert res["foraminal_width"].mae <= 1.1
    assert res["foraminal_area"].mean_abs_pct <= 10.5
    assert res["foraminal_width"].icc_a1 >= 0.85 and res["foraminal_area"].icc_a1 >= 0.88
    # posterior disc height, corners = 45° points on the bone: 0.16 mm, ICC 0.999 (docs §7); with the wall / endplate
    # line intersection (a point of the disc space) it was 1.76 mm, bias -1.8 mm
    assert res["posterior_disc_height"].n == 4
    assert res["posterior_disc_height"].mae <= 0.3 and abs(res["posterior_disc_height"].bias) <= 0.3


def test_no_implausible_value_unflagged(measured_dir):
    from FORAMEN3DLib.morphometry import PLAUSIBLE

    for c in CASES:
        doc = json.loads((measured_dir / c / "measurements.json").read_text())
        for m in doc["measurements"]:
            if m["metric"] not in PLAUSIBLE:
                continue
            lo, hi = PLAUSIBLE[m["metric"]]
            if not lo <= m["value"] <= hi:
                assert m["qc"] == "review" and m["flag"] == "", (c, m["metric"], m["side"], m["value"])
        for side, s in doc["sides"].items():
            if s["fallbacks"]:
                assert s["qc_status"] == "review" and not s["flagged"], (c, side)
