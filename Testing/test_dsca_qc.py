"""No false stenosis calls: QC flags that block grading (DuralSacSegLib.dsca) and mask post-processing
(DuralSacSegLib.postprocess), on masks with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from DuralSacSegLib import dsca
from DuralSacSegLib.dsca import compute_dsca_table
from DuralSacSegLib.postprocess import SPECS, parse_spec, postprocess_masks, postprocess_probabilities

from spinemorph.errors import InputError
from spinemorph.volume import Volume

PIX = 0.5  # mm
N = 120


def _ellipse(ci, cj, a_px, b_px, shape=(N, N)):
    jj, ii = np.mgrid[: shape[0], : shape[1]]
    return ((ii - ci) / a_px) ** 2 + ((jj - cj) / b_px) ** 2 <= 1.0


def _stack(n=10):
    """A straight canal: an ellipse of ~150 mm² (a 8 mm x 6 mm semi-axes) centred on every slice."""
    a = np.zeros((n, N, N), np.uint8)
    for k in range(n):
        a[k][_ellipse(60, 60, 16, 12)] = 1
    return a


def _vol(a):
    return Volume(a, (PIX, PIX, 4.0))


def _assert_no_graded_flagged(table):
    for r in table.rows:
        if r.blocking_flags:
            assert r.stenosis == "" and r.stenosis_note.startswith("not graded: ")
        else:
            assert r.stenosis != "" and r.stenosis_note == ""


def test_issue_stray_blob_of_0_2_mm2_is_not_called_absolute_stenosis():
    """The issue's case: on one slice the only foreground is a 0.2 mm² blob far from the canal."""
    a = _stack()
    a[4] = 0
    a[4, 10, 105] = 1  # one pixel of 0.45 x 0.45 mm = 0.2 mm², ~26 mm from the canal
    vol = Volume(a, (0.45, 0.45, 4.0))
    table = compute_dsca_table(vol, levels={"L4-5": float(table_pos(vol, 4))})
    r = table.rows[4]
    assert r.area_mm2 == pytest.approx(0.2025)
    assert dsca.FLAG_SMALL in r.qc_flags and dsca.FLAG_OFF_TRACK in r.qc_flags
    assert r.stenosis == "" and "below the plausibility floor" in r.stenosis_note and "canal track" in r.stenosis_note
    assert r.track_distance_mm > dsca.DEFAULT_OFF_TRACK_MM
    # without QC the old table called it "absolute stenosis"
    assert table.scheme.classify(r.area_mm2) == "absolute stenosis"
    # the smallest *graded* slice is a real sac, not the blob
    smallest = table.smallest_graded(1)[0]
    assert smallest.slice_index != 4 and smallest.stenosis == "no stenosis"
    # the level summary does not grade it and says why
    lv = table.levels[0]
    assert lv.slice_index == 4 and lv.stenosis == "" and lv.stenosis_note.startswith("not graded: slice 4 flagged")
    assert any("NOT graded" in line for line in table.qc_summary_lines())
    _assert_no_graded_flagged(table)
    # CSV / JSON carry the flags and the reason
    csv_text = table.to_csv()
    header = csv_text.splitlines()[0].split(",")
    assert "stenosis_note" in header and "qc_flags" in header and "track_distance_mm" in header
    doc = json.loads(table.to_json())
    s4 = doc["slices"][4]
    assert s4["stenosis"] == "" and "area_below_floor" in s4["qc_flags"] and s4["stenosis_note"].startswith("not graded")
    assert doc["qc"]["min_area_mm2"] == dsca.DEFAULT_MIN_AREA_MM2 and doc["qc"]["n_not_graded"] == 1
    assert doc["levels"][0]["stenosis"] == "" and "slice 4" in doc["levels"][0]["stenosis_note"]


def table_pos(vol, k):
    """Position (mm along the normal) of slice k of an identity-direction volume."""
    return float(vol.index_to_lps((0, 0, k))[2])


def test_genuine_central_stenosis_is_still_graded():
    """A centred, solid, narrowed sac (~60 mm²) between normal slices keeps its category (no false alarm)."""
    a = _stack()
    a[5] = 0
    a[5][_ellipse(60, 60, 11, 7)] = 1  # 11 x 7 px semi-axes at 0.5 mm: pi*5.5*3.5 ≈ 60 mm²
    table = compute_dsca_table(_vol(a))
    r = table.rows[5]
    assert 50 < r.area_mm2 < 70
    assert not r.blocking_flags and r.stenosis == "absolute stenosis"
    assert dsca.FLAG_JUMP in r.qc_flags  # informative only
    assert table.smallest_graded(1)[0].slice_index == 5
    _assert_no_graded_flagged(table)


def test_plausible_size_but_off_the_canal_track():
    """A sac-sized blob 30 mm from the canal of the other slices is not graded."""
    a = _stack()
    a[3] = 0
    a[3][_ellipse(100, 25, 14, 10)] = 1  # ~110 mm², centre (100, 25) px: ~26 mm from (60, 60)
    table = compute_dsca_table(_vol(a))
    r = table.rows[3]
    assert r.area_mm2 > dsca.DEFAULT_MIN_AREA_MM2
    assert dsca.FLAG_OFF_TRACK in r.qc_flags and r.stenosis == ""
    assert r.track_distance_mm == pytest.approx(math.hypot(40 * PIX, 35 * PIX), abs=1.0)
    assert all(dsca.FLAG_OFF_TRACK not in table.rows[k].qc_flags for k in range(10) if k != 3)
    _assert_no_graded_flagged(table)


@pytest.mark.parametrize("kind", ["multiple", "border", "crescent"])
def test_other_blocking_flags(kind):
    a = _stack()
    if kind == "multiple":
        a[6][_ellipse(20, 20, 4, 4)] = 1
        flag = dsca.FLAG_MULTIPLE
    elif kind == "border":
        a[6] = 0
        a[6][_ellipse(60, 3, 16, 12)] = 1
        flag = dsca.FLAG_BORDER
    else:
        ring = _ellipse(60, 60, 18, 14) & ~_ellipse(60, 60, 12, 9)
        ring[:, 60:] = False
        a[6] = ring
        flag = dsca.FLAG_LOW_SOLIDITY
    table = compute_dsca_table(_vol(a))
    assert flag in table.rows[6].qc_flags and table.rows[6].stenosis == ""
    _assert_no_graded_flagged(table)


def test_too_few_slices_for_a_track_and_bad_settings():
    a = _stack(2)
    a[1] = 0
    a[1][_ellipse(100, 20, 10, 10)] = 1
    table = compute_dsca_table(_vol(a))
    assert all(dsca.FLAG_OFF_TRACK not in r.qc_flags for r in table.rows)  # 2 slices: no track to compare with
    assert all(math.isnan(r.track_distance_mm) for r in table.rows)
    with pytest.raises(InputError):
        compute_dsca_table(_vol(a), min_area_mm2=float("nan"))
    with pytest.raises(InputError):
        compute_dsca_table(_vol(a), off_track_mm=-1)


def test_floor_is_a_setting():
    a = np.zeros((1, 40, 40), np.uint8)
    a[0, 10:14, 10:14] = 1  # 16 px of 1 mm² = 16 mm²
    vol = Volume(a, (1.0, 1.0, 3.0))
    assert compute_dsca_table(vol).rows[0].stenosis == ""
    assert compute_dsca_table(vol, min_area_mm2=10).rows[0].stenosis == "absolute stenosis"


# ---------------------------------------------------------------------------- post-processing
def test_postprocess_track_removes_the_stray_blob_and_keeps_the_canal():
    a = _stack().astype(bool)
    a[4] = False
    a[4, 10, 105] = True  # the stray blob alone on slice 4
    a[7][_ellipse(15, 100, 5, 5)] = True  # a second blob next to the sac on slice 7
    out = postprocess_masks(a, "track")
    assert not out[4].any()  # not connected to the canal across slices: removed, the slice becomes empty
    assert out[7].sum() == _ellipse(60, 60, 16, 12).sum()
    l2 = postprocess_masks(a, "largest2d")
    assert l2[4].sum() == 1  # per slice only: the blob is that slice's largest component
    assert l2[7].sum() == _ellipse(60, 60, 16, 12).sum()
    table = compute_dsca_table(_vol(out.astype(np.uint8)))
    assert table.rows[4].qc_flags == (dsca.FLAG_EMPTY,)


def test_postprocess_track_keeps_the_sac_beyond_a_stenosis():
    """A sac whose mask breaks at a tight stenosis (an empty slice, then a narrow, shifted piece) stays whole below it;
    a blob of the same size one sac diameter beside the line is still removed."""
    a = np.zeros((12, 120, 120), bool)
    for k in range(12):
        a[k][_ellipse(60 + k, 60, 10, 8)] = True  # the canal drifts 1 px per slice
    a[5] = False  # the mask breaks at the stenosis
    a[6] = False
    a[6][_ellipse(66, 60, 4, 3)] = True  # a thin sac right at the stenosis, not touching slice 7's piece
    a[7] = False
    a[7][_ellipse(67, 63, 6, 5)] = True
    a[9:11][:, _ellipse(68, 100, 6, 6)] = True  # a stray blob 40 px beside the canal on slices 9-10
    out = postprocess_masks(a, "track")
    for k in (0, 4, 6, 7, 8, 11):
        assert out[k].sum() == a[k].sum() - (_ellipse(68, 100, 6, 6).sum() if k in (9, 10) else 0), k
    assert not out[9:11, 60:80, 92:110].any() and out[9:11].any()
    assert not out[5].any()


def test_postprocess_fill_and_probabilities():
    ring = _ellipse(60, 60, 16, 12) & ~_ellipse(60, 60, 3, 3)
    filled = postprocess_masks(ring, "fill")
    assert filled.sum() == _ellipse(60, 60, 16, 12).sum() and postprocess_masks(ring, "none").sum() == ring.sum()
    prob = np.where(ring, 0.99, 0.1).astype(np.float32)[None]
    prob[0, 5, 5] = 0.99  # stray pixel
    pp = postprocess_probabilities(prob, 0.95, "track+fill")
    assert pp[0, 5, 5] == 0.0 and pp[0, 60, 60] == 1.0 and (pp[0] >= 0.95).sum() == filled.sum()
    assert postprocess_probabilities(prob, 0.95, "none") is prob
    assert [parse_spec(s) for s in ("none", "fill", "track+fill")] == [("none", False), ("none", True), ("track", True)]
    assert set(SPECS) >= {"none", "track", "largest2d+fill"}
    with pytest.raises(InputError):
        parse_spec("biggest")


def test_segment_volume_applies_postprocessing():
    """End to end with an injected predictor that returns the sac plus a stray blob on one slice."""
    from DuralSacSegLib.segment import segment_volume

    a = _stack(6)
    img = Volume(a.astype(np.float32) * 100 + 10, (PIX, PIX, 4.0))

    def predictor(batch):
        out = (batch > 0.5).astype(np.float32)
        out[2, 0, 20:24, 280:284] = 1.0  # a stray blob on slice 2 of the 320 grid
        return out

    raw = segment_volume(img, predictor=predictor)
    clean = segment_volume(img, predictor=predictor, postprocess="track")
    assert dsca.FLAG_MULTIPLE in raw.table.rows[2].qc_flags and raw.table.rows[2].stenosis == ""
    assert clean.table.rows[2].n_components == 1 and clean.table.rows[2].stenosis == "no stenosis"
    assert clean.info()["postprocess"] == "track"
    with pytest.raises(InputError):
        segment_volume(img, predictor=predictor, postprocess="nonsense")


def test_track_bridges_an_empty_slice_between_sac_slices_and_the_table_flags_it():
    """The tightest slice of a stenosis left empty at the decision threshold is segmented again at the bridging
    threshold (only the piece on the canal line; the stack's ends stay empty), flagged ``bridged_gap`` and not graded."""
    from DuralSacSegLib.postprocess import BRIDGE_THRESHOLD

    n = 9
    prob = np.full((n, N, N), 0.02, np.float32)
    for k in range(1, 8):
        prob[k][_ellipse(60, 60, 16, 12)] = 0.99
    narrow = _ellipse(60, 60, 8, 6)  # the stenosis: 0.25 of the area, and the network unsure (0.7 < 0.95)
    prob[4] = 0.02
    prob[4][narrow] = 0.7
    prob[4][_ellipse(15, 100, 5, 5)] = 0.8  # a bright blob far from the canal line on the same slice
    prob[0][_ellipse(60, 60, 16, 12)] = 0.7  # end of the stack: not between two sac slices, never filled
    assert BRIDGE_THRESHOLD < 0.7
    bridged = []
    post = postprocess_probabilities(prob, 0.95, "track+fill", bridged=bridged)
    mask = post >= 0.95
    assert mask[4].sum() == narrow.sum() and not mask[4, 90:110, 5:25].any()
    assert not mask[0].any() and mask[1].sum() == _ellipse(60, 60, 16, 12).sum()
    assert bridged == [4]
    # without the probabilities (a binary mask only) nothing can be bridged
    assert not postprocess_masks(prob >= 0.95, "track")[4].any()
    # the bridged piece must lie on the track: a slice whose only candidate is off the line stays empty
    off = prob.copy()
    off[4] = 0.02
    off[4][_ellipse(15, 100, 5, 5)] = 0.8
    assert not (postprocess_probabilities(off, 0.95, "track") >= 0.95)[4].any()
    # a slice whose only piece at the decision threshold is a stray blob (removed by track) is bridged and counted
    blob = prob.copy()
    blob[4][_ellipse(15, 100, 5, 5)] = 0.99
    bridged = []
    assert (postprocess_probabilities(blob, 0.95, "track", bridged=bridged) >= 0.95)[4].sum() == narrow.sum()
    assert bridged == [4]
    # a piece at the bridging threshold that spills beyond the sac around it (epidural fat at p >= 0.5) is cut to
    # the canal cross-section of the two neighbouring sac slices: never wider than the sac above and below
    spill = prob.copy()
    spill[4] = 0.02
    spill[4][_ellipse(60, 60, 30, 24)] = 0.6  # 3.75x the neighbours' area, centred on the canal line
    bridged = []
    cut = (postprocess_probabilities(spill, 0.95, "track+fill", bridged=bridged) >= 0.95)[4]
    assert bridged == [4] and cut.sum() == _ellipse(60, 60, 16, 12).sum()
    assert not (cut & ~_ellipse(60, 60, 16, 12)).any()
    table = compute_dsca_table(_vol(mask.astype(np.uint8)), low_confidence_slices=[4])
    r = table.rows[4]
    assert dsca.FLAG_BRIDGED in r.qc_flags and r.stenosis == "" and "lower threshold" in r.stenosis_note
    assert r.area_mm2 == pytest.approx(narrow.sum() * PIX * PIX)
    assert table.rows[3].stenosis  # its neighbours are graded as usual


def unsure_on_slice_3(postprocess="track", n_px=N):
    """``(image, result)`` of :func:`segment_volume` on a straight 7-slice canal with an injected network that is
    unsure on slice 3 only (0.7 < threshold 0.95): the case gap bridging is for (also used by the Slicer glue test)."""
    from DuralSacSegLib.segment import segment_volume

    a = _stack(7) if n_px == N else np.repeat(_ellipse(n_px // 2, n_px // 2, 8, 6, (n_px, n_px))[None], 7, axis=0)
    img = Volume(a.astype(np.float32) * 100 + 10, (PIX, PIX, 4.0))

    def predictor(batch):
        out = (batch > 0.5).astype(np.float32)
        out[3] *= 0.7
        return out

    return img, segment_volume(img, predictor=predictor, threshold=0.95, postprocess=postprocess)


def test_segment_volume_flags_the_bridged_slice():
    """End to end: with ``track`` the unsure slice is bridged, listed with its area and flagged, not graded; without
    post-processing it stays empty."""
    _img, raw = unsure_on_slice_3("none")
    _img, bridged = unsure_on_slice_3("track")
    assert raw.table.rows[3].qc_flags == (dsca.FLAG_EMPTY,)
    r = bridged.table.rows[3]
    assert dsca.FLAG_BRIDGED in r.qc_flags and r.stenosis == ""
    assert r.area_mm2 == pytest.approx(bridged.table.rows[2].area_mm2, rel=0.05)
    assert all(dsca.FLAG_BRIDGED not in bridged.table.rows[k].qc_flags for k in (0, 1, 2, 4, 5, 6))


def test_recompute_keeps_the_bridged_flag_until_the_slice_is_edited():
    """"Recompute table" after a run: an unedited bridged slice stays flagged and ungraded; once the reader edits it
    (area changed by more than 5 %), their outline is graded."""
    from DuralSacSegLib.segment import UNEDITED_AREA_FRACTION, recompute_table

    img, res = unsure_on_slice_3("track")
    assert dsca.FLAG_BRIDGED in res.table.rows[3].qc_flags
    plain = recompute_table(res.mask, img)  # no previous table: nothing to carry
    assert dsca.FLAG_BRIDGED not in plain.rows[3].qc_flags and plain.rows[3].stenosis
    again = recompute_table(res.mask, img, previous=res.table)
    assert dsca.FLAG_BRIDGED in again.rows[3].qc_flags and again.rows[3].stenosis == ""
    assert dsca.FLAG_BRIDGED in recompute_table(res.mask, img, previous=again).rows[3].qc_flags  # and again
    edited = res.mask.array.copy()
    edited[3] = 0
    edited[3][_ellipse(60, 60, 12, 9)] = 1  # the reader draws a smaller sac
    assert abs(edited[3].sum() / res.mask.array[3].sum() - 1) > UNEDITED_AREA_FRACTION
    mine = recompute_table(res.mask.with_array(edited), img, previous=res.table)
    assert dsca.FLAG_BRIDGED not in mine.rows[3].qc_flags and mine.rows[3].stenosis


def test_bridging_follows_a_curved_canal():
    """The expected centre of a bridged slice comes from its neighbours, not from a straight line through the whole
    stack: in a lordotic (curved) canal a straight line misses the sac at the apex by more than a sac diameter."""
    from DuralSacSegLib.postprocess import _bridge_gaps

    track = np.zeros((15, N, N), bool)
    cols = [60 + 0.4 * (k - 7) ** 2 for k in range(15)]  # apex of the curve at slice 7
    for k in range(15):
        if k != 7:
            track[k][_ellipse(cols[k], 60, 3, 2)] = True
    prob = track.astype(np.float32) * 0.99
    prob[7][_ellipse(60.4, 60, 2, 2)] = 0.7  # the unsure sac where the curve puts it
    straight = np.polyfit([k for k in range(15) if k != 7], [c for k, c in enumerate(cols) if k != 7], 1)
    assert abs(np.polyval(straight, 7) - 60) > 2 * 3  # a straight line would look > one diameter away
    out, done = _bridge_gaps(track, prob, 0.5)
    assert done == [7] and out[7].sum() == _ellipse(60.4, 60, 2, 2).sum()
