"""The offset search's prepared slab stack (:func:`FORAMEN3DLib.landmarks.slab_stack` / ``stack_view``) gives the
same union-slab lateral views as :func:`FORAMEN3DLib.landmarks.lateral_view` cropped to the search window, on an
oblique anisotropic grid (so that the in-plane Gaussian, the per-slab Gaussian along x' and the body column all
matter)."""

from __future__ import annotations

import numpy as np
import pytest
from FORAMEN3DLib import landmarks as L
from FORAMEN3DLib.morphometry import VIEW_WINDOW_MM, _crop_view

from spinemorph import phantom


@pytest.fixture(scope="module")
def lm():
    from test_morphometry import _oblique

    from spinemorph.volume import Volume

    ph = phantom.make_phantom(params=phantom.preset_params("normal", tilt_deg=-10.0))
    sp = np.array([0.6, 0.6, 1.2])  # anisotropic: lateral views smoothed by 0.6 mm
    D = _oblique()
    n = (np.array([100.0, 100.0, 70.0]) / sp).astype(int)
    c = ph.canal_to_lps(np.array([0.0, 12.0, 0.0]))
    grid = Volume(np.zeros(n[::-1], np.uint8), tuple(sp), c - D @ (n * sp / 2), D)
    return L.find_landmarks(ph.rasterize_labels(grid, kind="foramen"), slab_half_width_mm=1.0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_stack_view_equals_lateral_view(lm, side):
    sgn = 1.0 if side == "left" else -1.0
    seed = (lm.posterior_wall_y_mm + 5.0, 0.0)
    xs = lm.midline_x_mm + sgn * np.array([9.0, 12.5, 16.0])
    st = L.slab_stack(lm, side, xs.min() - 1.0, xs.max() + 1.0, seed, VIEW_WINDOW_MM)
    assert st is not None and st.smooth_sigma_px > 0
    for x in xs:
        a = _crop_view(L.lateral_view(lm, side, float(x), 1.0, "max"), seed, VIEW_WINDOW_MM)
        b = L.stack_view(st, float(x), 1.0)
        assert np.array_equal(a.y_mm, b.y_mm) and np.array_equal(a.z_mm, b.z_mm)
        for d in ("fractions", "body", "body_max"):
            da, db = getattr(a, d), getattr(b, d)
            assert set(da) == set(db)
            for k in da:
                assert np.abs(da[k] - db[k]).max() <= 1e-5, (d, k)
        assert a.fractions[L.L5].max() > 0.9  # the view holds the anatomy, not an empty crop
