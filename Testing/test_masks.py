"""spinemorph.masks: connected components with known answers (2D and 3D, both connectivities)."""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph.errors import InputError
from spinemorph.masks import bounding_box, label_components, largest_component, structure


def test_structures_are_the_documented_neighbourhoods():
    assert structure(2, "full").sum() == 9 and structure(2, "face").sum() == 5
    assert structure(3, "full").sum() == 27 and structure(3, "face").sum() == 7
    with pytest.raises(InputError, match="connectivity"):
        structure(3, "edge")


def test_2d_diagonal_pixels_join_only_with_full_connectivity():
    m = np.zeros((6, 6), np.uint8)
    m[0, 0] = m[1, 1] = m[2, 2] = 1  # a diagonal line of 3 pixels
    m[4:6, 4:6] = 1  # a 2 × 2 block of 4 pixels
    assert label_components(m, "full")[1] == 2
    assert label_components(m, "face")[1] == 4
    full = largest_component(m, "full")
    assert full.dtype == bool and full.sum() == 4 and full[4:6, 4:6].all()  # block (4) beats diagonal (3)
    m[3, 3] = 1  # the diagonal now touches the block corner: one 8-connected component of 8 pixels
    assert largest_component(m, "full").sum() == 8
    face = largest_component(m, "face")
    assert face.sum() == 4 and face[4:6, 4:6].all()


def test_3d_corner_contact_and_sizes():
    m = np.zeros((5, 5, 5), bool)
    m[0:2, 0:2, 0:2] = True  # 8 voxels
    m[2, 2, 2] = True  # touches the cube only at a corner
    m[4, 0:5, 4] = True  # a rod of 5 voxels
    assert label_components(m, "full")[1] == 2 and label_components(m, "face")[1] == 3
    assert largest_component(m, "full").sum() == 9
    assert largest_component(m, "face").sum() == 8
    assert np.array_equal(largest_component(m, "face"), np.pad(np.ones((2, 2, 2), bool), ((0, 3),) * 3))


def test_empty_single_and_ties():
    assert not largest_component(np.zeros((4, 4), np.uint8)).any()
    one = np.zeros((4, 4, 4), np.int16)
    one[1:3, 1:3, 1:3] = 7
    assert np.array_equal(largest_component(one), one > 0)
    tie = np.zeros((3, 7), bool)
    tie[1, 0:2] = True  # first in raster order
    tie[1, 5:7] = True
    kept = largest_component(tie)
    assert kept.sum() == 2 and kept[1, 0] and kept[1, 1] and not kept[1, 5]


def test_rejects_1d_and_4d():
    with pytest.raises(InputError, match="2D or 3D"):
        largest_component(np.ones(5, bool))
    with pytest.raises(InputError, match="2D or 3D"):
        label_components(np.ones((2, 2, 2, 2), bool))


def test_bounding_box():
    m = np.zeros((4, 6, 5), np.uint8)
    m[1, 2, 3] = m[2, 4, 1] = 1
    lo, hi = bounding_box(m)
    assert lo.tolist() == [1, 2, 1] and hi.tolist() == [3, 5, 4]
    lo2, hi2 = bounding_box(np.eye(3, dtype=bool))
    assert lo2.tolist() == [0, 0] and hi2.tolist() == [3, 3]
    with pytest.raises(InputError, match="empty"):
        bounding_box(np.zeros((2, 2), bool))
