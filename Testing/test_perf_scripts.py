"""The analysis scripts behind docs/performance.md (scripts/roi_agreement.py, scripts/resolution_ceiling_3d.py)
on inputs with exact answers, so that the published figures come from code that is checked."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_resolution_ceiling_reconstructs_grid_aligned_layers_exactly_and_loses_thin_plates():
    rc = _load("resolution_ceiling_3d")
    lab = np.zeros((32, 24, 20), np.uint8)
    lab[4:12] = 1   # layers across the whole volume, faces on multiples of 4: no edges or corners
    lab[12:16] = 2  # disc, 4 voxels (3.2 mm) thick
    lab[16:28] = 3
    for f in (2, 4):
        for kind in ("onehot", "sdf"):
            rec = rc.reconstruct(lab, f, kind)
            assert rec.shape == lab.shape and np.array_equal(rec, lab), (f, kind)
    plate = lab.copy()
    plate[12:16] = 0
    plate[14] = 2  # a 1-voxel (0.8 mm) plate
    rec = rc.reconstruct(plate, 4, "onehot")
    assert rc.dice(plate == 2, rec == 2) == 0.0  # below the 3.2 mm grid: gone
    assert rc.dice(plate == 1, rec == 1) > 0.95
    # a cube keeps its faces but loses its corners on the coarse grid
    cube = np.zeros((32, 32, 32), np.uint8)
    cube[8:24, 8:24, 8:24] = 1
    rec = rc.reconstruct(cube, 4, "onehot")
    d = rc.dice(cube == 1, rec == 1)
    assert 0.9 < d < 1.0 and rec[16, 16, 8] == 1 and rec[8, 8, 8] == 0
    # shapes that are not multiples of the factor are padded and cropped back
    assert rc.reconstruct(lab[:30, :23, :19], 4, "sdf").shape == (30, 23, 19)


def test_roi_agreement_case_with_a_context_free_network():
    """A pixel-wise network has no context: the window agrees with whole slices exactly (context Dice 1)."""
    ra = _load("roi_agreement")
    from spinemorph.volume import Volume

    n, sp = 12, 0.6875
    rr, cc = np.mgrid[0:320, 0:320]
    truth = np.zeros((n, 320, 320), np.uint8)
    for k in range(n):
        truth[k][((rr - 180) * sp) ** 2 + ((cc - 150 - k) * sp) ** 2 <= 12.0**2] = 1  # > 0.5 % of the slice
    body = ((rr - 160) / 150.0) ** 2 + ((cc - 160) / 150.0) ** 2 <= 1.0
    image = Volume(np.where(truth > 0, 100.0, np.where(body, 30.0, 0.0)).astype(np.float32), (sp, sp, 4.0),
                   (0.0, 0.0, 0.0), np.eye(3))
    tvol = Volume(truth, (sp, sp, 4.0), (0.0, 0.0, 0.0), np.eye(3))

    def pixelwise(batch):
        return batch.copy()

    row = ra.run_case(pixelwise, 0.5, 128, image, tvol)
    assert row["n_slices"] == n and row["located"] == 3 and row["rerun_whole"] == 0 and row["cropped"] == 9
    assert row["context_dice"] == 1.0 and max(abs(x) for x in row["context_area_diff_mm2"]) == 0.0
    assert row["dice_whole_vs_truth"] == pytest.approx(1.0) and row["dice_crop_vs_truth"] == pytest.approx(1.0)
    s = ra.summarise([row], 128)
    assert s["work_ratio"] == pytest.approx((3 * 320**2 + 9 * 128**2) / (12 * 320**2))
    assert "| x |" in ra.markdown({"date_utc": "d", "machine": "m", "model": "p", "crop_px": 128, "threshold": 0.5,
                                   "torch_threads": 1, "summary": {"x": s}})
