"""spinemorph.samples.dsca_held_out_samples: evaluation planes from the held-out SPIDER label maps only."""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph import samples, spider
from spinemorph.errors import InputError


def test_held_out_planes_come_from_held_out_cases_and_repeat(spider_root):
    a = list(samples.dsca_held_out_samples(2, seed=31, size=64))
    b = list(samples.dsca_held_out_samples(2, seed=31, size=64))
    held = set(spider.held_out_mask_cases())
    assert len(a) == 2 and {s.case for s in a} <= held
    assert not held & set(spider.train_mask_cases())
    for x, y in zip(a, b):
        assert x.case == y.case and np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask)
        assert x.image.shape == (64, 64) and x.source == "spider_masks" and x.mask.any()
    # the training stream refuses the same cases
    with pytest.raises(InputError, match="held out"):
        next(iter(samples.dsca_samples(1, 0, sources=("spider_masks",), cases=[a[0].case])))
