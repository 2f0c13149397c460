"""Property-based tests (hypothesis) of the geometry, area and measurement functions and of atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from spinemorph.atomic import atomic_path, atomic_write_bytes, prepare_output_dir
from spinemorph.errors import InputError, OutputError
from spinemorph.volume import Volume, check_geometry

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

spacing = st.floats(0.1, 8.0, allow_nan=False)
coord = st.floats(-500.0, 500.0, allow_nan=False)


@st.composite
def rotations(draw) -> np.ndarray:
    """A proper or improper orthonormal 3x3 matrix (any orientation a scanner may write)."""
    q = np.array([draw(st.floats(-1, 1)) for _ in range(4)])
    assume(np.linalg.norm(q) > 0.1)
    w, x, y, z = q / np.linalg.norm(q)
    r = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    if draw(st.booleans()):
        r[:, 2] *= -1  # left-handed index frames exist too
    return r


@st.composite
def volumes(draw) -> Volume:
    sp = tuple(draw(spacing) for _ in range(3))
    origin = tuple(draw(coord) for _ in range(3))
    shape = tuple(draw(st.integers(1, 6)) for _ in range(3))
    return Volume(np.zeros(shape, np.uint8), sp, origin, draw(rotations()))


# ---------------------------------------------------------------------- Volume geometry
@FAST
@given(vol=volumes(), ijk=arrays(float, (5, 3), elements=st.floats(-50, 50)))
def test_index_lps_round_trip(vol, ijk):
    xyz = vol.index_to_lps(ijk)
    np.testing.assert_allclose(vol.lps_to_index(xyz), ijk, atol=1e-6)
    # distances scale with the spacing along each index axis
    step = vol.index_to_lps(np.eye(3)) - vol.index_to_lps(np.zeros(3))
    np.testing.assert_allclose(np.linalg.norm(step, axis=1), vol.spacing_mm, rtol=1e-9)


@FAST
@given(vol=volumes(), ijk=arrays(float, (3,), elements=st.floats(-20, 20)))
def test_index_to_lps_matches_simpleitk(vol, ijk):
    img = vol.to_sitk()
    expected = img.TransformContinuousIndexToPhysicalPoint(tuple(float(v) for v in ijk))
    np.testing.assert_allclose(vol.index_to_lps(ijk), expected, atol=1e-6)
    back = Volume.from_sitk(img)
    np.testing.assert_allclose(back.affine_lps, vol.affine_lps, atol=1e-9)


@FAST
@given(vol=volumes())
def test_orthonormal_geometry_accepted(vol):
    assume(all(0.05 <= s <= 20 for s in vol.spacing_mm))
    check_geometry(vol)


@FAST
@given(vol=volumes(), shear=st.floats(0.05, 2.0))
def test_sheared_direction_refused(vol, shear):
    d = vol.direction.copy()
    d[:, 1] = d[:, 1] + shear * d[:, 0]
    with pytest.raises(InputError, match="non-orthogonal"):
        check_geometry(Volume(vol.array, vol.spacing_mm, vol.origin_mm, d))


@FAST
@given(vol=volumes(), bad=st.sampled_from([0.0, -1.0, float("nan"), float("inf"), 1e-4, 100.0]), axis=st.integers(0, 2))
def test_bad_spacing_refused(vol, bad, axis):
    sp = list(vol.spacing_mm)
    sp[axis] = bad
    with pytest.raises(InputError, match="spacing"):
        check_geometry(Volume(vol.array, sp, vol.origin_mm, vol.direction))


# ---------------------------------------------------------------------- DSCA area
@st.composite
def masks(draw):
    """A random binary slice stack with at least one foreground pixel per slice."""
    k = draw(st.integers(1, 3))
    h = draw(st.integers(6, 20))
    w = draw(st.integers(6, 20))
    m = draw(arrays(np.uint8, (k, h, w), elements=st.integers(0, 1)))
    m[:, h // 2, w // 2] = 1
    return m


@SLOW
@given(mask=masks(), sx=st.floats(0.2, 1.5), sy=st.floats(0.2, 1.5), f=st.integers(2, 3))
def test_dsca_area_invariant_to_pixel_size(mask, sx, sy, f):
    """Area (mm²) = pixels x pixel area; the same region sampled with pixels f times smaller gives the same area."""
    from DuralSacSegLib.dsca import compute_dsca_table

    coarse = compute_dsca_table(Volume(mask, (sx, sy, 3.0)))
    fine_mask = np.kron(mask, np.ones((1, f, f), np.uint8))
    fine = compute_dsca_table(Volume(fine_mask, (sx / f, sy / f, 3.0)))
    expected = mask.reshape(mask.shape[0], -1).sum(1) * sx * sy
    np.testing.assert_allclose(coarse.areas_mm2(), expected, rtol=1e-9)
    np.testing.assert_allclose(fine.areas_mm2(), expected, rtol=1e-9)


@SLOW
@given(a=st.floats(4.0, 9.0), b=st.floats(4.0, 9.0), s=st.floats(0.2, 0.6), rot=rotations())
def test_dsca_ellipse_area_any_pixel_size_and_orientation(a, b, s, rot):
    """An ellipse of semi-axes a, b mm drawn on any in-plane grid (pixel s mm, any orientation): area ≈ π a b within
    the discretisation bound (perimeter x pixel diagonal)."""
    from DuralSacSegLib.dsca import compute_dsca_table

    n = int(np.ceil(2 * max(a, b) / s)) + 4
    jj, ii = np.mgrid[0:n, 0:n]
    x, y = (ii - (n - 1) / 2) * s, (jj - (n - 1) / 2) * s
    m = ((x / a) ** 2 + (y / b) ** 2 <= 1).astype(np.uint8)[None]
    table = compute_dsca_table(Volume(m, (s, s, 4.0), (0.0, 0.0, 0.0), rot))
    perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))
    assert abs(table.areas_mm2()[0] - np.pi * a * b) <= perimeter * s * np.sqrt(2) / 2 + 1e-9


# ---------------------------------------------------------------------- foramen measurements from points
@FAST
@given(rot=rotations(), shift=arrays(float, (3,), elements=coord),
       poly=arrays(float, (6, 2), elements=st.floats(-20, 20), unique=True))
def test_foramen_area_and_lengths_invariant_to_rigid_motion(rot, shift, poly):
    from FORAMEN3DLib.morphometry import area_from_outline, height_from_points

    plane = np.column_stack([np.zeros(len(poly)), poly])  # outline in the (y, z) lateral plane
    x, y = poly[:, 0], poly[:, 1]
    shoelace = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    moved = plane @ rot.T + shift
    assert area_from_outline(plane, (1.0, 0.0, 0.0)) == pytest.approx(shoelace, rel=1e-9, abs=1e-9)
    assert area_from_outline(moved, rot @ np.array([1.0, 0.0, 0.0])) == pytest.approx(shoelace, rel=1e-7, abs=1e-7)
    assert area_from_outline(moved) == pytest.approx(shoelace, rel=1e-7, abs=1e-7)
    pts = plane[:2]
    assert height_from_points(pts @ rot.T + shift) == pytest.approx(float(np.linalg.norm(pts[1] - pts[0])), rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------- atomic writes
names = st.sampled_from(["table.csv", "mask.nii.gz", "state.pt", "report.json", "seg.seg.nrrd"])


@SLOW
@given(data=st.binary(max_size=4096), old=st.binary(max_size=64), name=names)
def test_atomic_write_replaces_whole_file(tmp_path_factory, data, old, name):
    d = tmp_path_factory.mktemp("atomic")
    p = d / name
    p.write_bytes(old)
    atomic_write_bytes(p, data)
    assert p.read_bytes() == data
    assert os.listdir(d) == [name]


@SLOW
@given(old=st.binary(min_size=1, max_size=64), part=st.binary(max_size=256), name=names,
       exc=st.sampled_from([RuntimeError, KeyboardInterrupt, OSError]))
def test_atomic_write_failure_keeps_old_file_and_no_temp(tmp_path_factory, old, part, name, exc):
    d = tmp_path_factory.mktemp("atomic")
    p = d / name
    p.write_bytes(old)
    raised = OutputError if exc is OSError else exc
    with pytest.raises(raised):
        with atomic_path(p) as tmp:
            assert tmp.parent == d and tmp.name.endswith("".join(Path(name).suffixes))  # format from the suffix
            tmp.write_bytes(part)
            raise exc(28, "No space left on device") if exc is OSError else exc("stop")
    assert p.read_bytes() == old
    assert os.listdir(d) == [name]


@SLOW
@given(existing=st.lists(st.sampled_from(["a.csv", "b.json", "c.png"]), unique=True),
       expected=st.lists(st.sampled_from(["a.csv", "b.json", "c.png", "d.nrrd"]), unique=True))
def test_prepare_output_dir_never_overwrites_without_permission(tmp_path_factory, existing, expected):
    d = tmp_path_factory.mktemp("out")
    for n in existing:
        (d / n).write_text(n)
    clash = set(existing) & set(expected)
    if clash:
        with pytest.raises(OutputError, match="--overwrite"):
            prepare_output_dir(d, overwrite=False, expected=expected)
    else:
        prepare_output_dir(d, overwrite=False, expected=expected)
    prepare_output_dir(d, overwrite=True, expected=expected)
    assert sorted(os.listdir(d)) == sorted(existing)  # checking never changes the folder


# ---------------------------------------------------------------------- file round trip keeps geometry
@SLOW
@given(vol=volumes(), shape=st.tuples(st.integers(1, 5), st.integers(4, 7), st.integers(4, 7)),
       suffix=st.sampled_from([".nrrd", ".nii.gz", ".mha"]))
def test_write_read_round_trip_keeps_geometry(tmp_path_factory, vol, shape, suffix):
    from spinemorph.volume import read_volume, write_volume

    assume(all(0.05 <= s <= 20 for s in vol.spacing_mm))
    arr = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    v = Volume(arr, vol.spacing_mm, vol.origin_mm, vol.direction)
    p = tmp_path_factory.mktemp("rt") / f"v{suffix}"
    write_volume(v, p)
    back = read_volume(p)
    np.testing.assert_array_equal(back.array, arr)
    np.testing.assert_allclose(back.affine_lps, v.affine_lps, atol=1e-4)
    assert isinstance(sitk.ReadImage(str(p)), sitk.Image)
