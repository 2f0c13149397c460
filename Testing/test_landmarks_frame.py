"""One L4-5 segment-frame estimator (:mod:`FORAMEN3DLib.landmarks_frame`) for the morphometry and the planner: both
former names are the one class, each frame records the axis rule it used, and on a tilted phantom both
rules recover the phantom's own axes (its exact canal frame, lordotic tilt 12°) within 3°."""

from __future__ import annotations

import math

import numpy as np
import pytest
from FORAMEN3DLib import landmarks, planning_frame
from FORAMEN3DLib.landmarks_frame import AXIS_RULES, SegmentFrame, segment_frame

from spinemorph import phantom
from spinemorph.errors import InputError
from spinemorph.volume import Volume


def test_one_frame_class_under_both_names():
    assert landmarks.SpineFrame is SegmentFrame and planning_frame.AnatomicalFrame is SegmentFrame
    th = math.radians(20.0)
    f = SegmentFrame(np.array([3.0, -2, 5]), np.array([1.0, 0, 0]), np.array([0, math.cos(th), math.sin(th)]),
                     np.array([0, -math.sin(th), math.cos(th)]), 0.9)
    g = SegmentFrame(origin_lps=f.origin_lps, axes_lps=np.stack([f.x_axis, f.y_axis, f.z_axis], axis=1))
    p = np.array([[10.0, 4.0, -7.0], [0.0, 0.0, 0.0]])
    assert np.allclose(f.to_frame(p), g.to_frame(p)) and np.allclose(f.to_lps(f.to_frame(p)), p)
    assert np.allclose(f.rotation, f.axes_lps.T) and np.allclose(f.to_frame(p), (p - f.origin_lps) @ f.rotation.T)
    assert np.allclose(f.midline_distance_mm(p), np.abs(p[:, 0] - 3.0))
    assert f.as_dict()["axis_rule"] == "" and f.as_dict()["symmetry_score"] == 0.9
    with pytest.raises(AttributeError):
        f.origin_lps = np.zeros(3)


@pytest.fixture(scope="module")
def tilted():
    ph = phantom.make_phantom(params=phantom.preset_params("normal", tilt_deg=12.0))
    D = np.eye(3)
    n = np.array([200, 200, 150])
    c = ph.canal_to_lps(np.array([0.0, 12.0, 0.0]))
    grid = Volume(np.zeros(n[::-1], np.uint8), (0.5, 0.5, 0.5), c - D @ (n * 0.5 / 2), D)
    return ph, ph.rasterize_labels(grid, kind="foramen")


@pytest.mark.parametrize("rule", AXIS_RULES)
def test_both_rules_recover_the_phantom_axes_and_record_the_rule(tilted, rule):
    ph, labels = tilted
    f = segment_frame(labels, rule)
    assert isinstance(f, SegmentFrame) and f.axis_rule.startswith(rule + ":")
    assert "z = disc normal" in f.axis_rule
    truth = ph.R  # columns: the phantom's x' (left), y' (posterior), z' (cranial) in LPS
    for k in range(3):
        ang = math.degrees(math.acos(float(np.clip(f.axes_lps[:, k] @ truth[:, k], -1, 1))))
        assert ang <= 3.0, (rule, "xyz"[k], ang)
    assert np.allclose(np.cross(f.x_axis, f.y_axis), f.z_axis, atol=1e-9)  # right-handed


def test_named_entry_points_use_their_rules(tilted):
    _, labels = tilted
    assert landmarks.build_frame(labels).axis_rule.startswith("posterior-elements:")
    f = planning_frame.anatomical_frame(labels)
    assert f.axis_rule.startswith("mirror-symmetry:") and "mirror-symmetry plane normal" in f.axis_rule
    assert f.symmetry_score > 0.97
    with pytest.raises(InputError, match="unknown frame axis rule"):
        segment_frame(labels, "bodies")
