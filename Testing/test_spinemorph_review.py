"""Known-answer tests for review fixes in spinemorph/ that have no better home among the existing test files."""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph.errors import InputError
from spinemorph.volume import Volume


def _labelmap(values=(1, 2, 3)) -> Volume:
    a = np.zeros((6, 5, 4), np.uint8)
    for n, v in enumerate(values):
        a[2 * n:2 * n + 2] = v
    return Volume(a, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.eye(3))


def test_plan_read_labels_maps_seg_nrrd_by_name(tmp_path):
    from spinemorph.app.cmd_plan import read_labels
    from spinemorph.segio import write_seg_nrrd

    grey = (0.5, 0.5, 0.5)
    path = write_seg_nrrd(_labelmap(), {1: ("L5", grey), 2: ("L4-5 disc", grey), 3: ("l4", grey)}, tmp_path / "a.seg.nrrd")
    got = np.asarray(read_labels(path).array)
    assert got[0, 0, 0] == 3 and got[2, 0, 0] == 2 and got[4, 0, 0] == 1  # by name, not by stored value


def test_plan_read_labels_rejects_unknown_segment_names(tmp_path):
    from spinemorph.app.cmd_plan import read_labels
    from spinemorph.segio import write_seg_nrrd

    grey = (0.5, 0.5, 0.5)
    path = write_seg_nrrd(_labelmap(), {1: ("L4", grey), 2: ("Segment_2", grey), 3: ("vertebra", grey)},
                          tmp_path / "b.seg.nrrd")
    with pytest.raises(InputError, match="'Segment_2', 'vertebra'"):
        read_labels(path)
