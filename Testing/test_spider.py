"""Tests of spinemorph.spider (real SPIDER loaders) and the SPIDER-based sample builders of spinemorph.samples.

Everything that reads the data uses the ``spider_root`` fixture (skips when the data are absent).
"""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph import spider
from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5


def test_root_absent_gives_none(monkeypatch, tmp_path):
    monkeypatch.setenv(spider.ENV_VAR, str(tmp_path / "nothing"))
    assert spider.spider_root() is None
    with pytest.raises(InputError, match=spider.ENV_VAR):
        spider.read_manifest()


def test_split_constants_are_fixed_and_disjoint():
    assert spider.HELD_OUT_PATIENTS == ("11", "41", "57", "98", "136", "166", "220")
    assert set(spider.HELD_OUT_SLAB_PATIENTS) <= set(spider.HELD_OUT_PATIENTS)
    assert {c.split("_")[0] for c in spider.HELD_OUT_MASK_CASES} <= set(spider.HELD_OUT_PATIENTS)
    assert any(c.endswith("t2_SPACE") for c in spider.HELD_OUT_MASK_CASES)
    assert "Sci Data 11, 264 (2024)" in spider.SPIDER_ATTRIBUTION and "CC BY 4.0" in spider.SPIDER_ATTRIBUTION


def test_held_out_docstring_matches_constant():
    """The module docstring states the held-out set and its one deviation from the selection rule (136, not 142)."""
    doc = " ".join(spider.__doc__.split())
    assert "11, 41, 57, 98, 136, 166, 220" in doc
    assert "142 is a training patient" in doc and "136" in doc
    assert "142" not in spider.HELD_OUT_PATIENTS and "136" in spider.HELD_OUT_PATIENTS
    assert "142_t2" not in spider.HELD_OUT_MASK_CASES


def test_held_out_rule_deviation(spider_root):
    """Known answer: the stated rule (indices 2, 7, ..., 32 of the sorted slab patients) differs only at 142 -> 136."""
    slabs = sorted(spider.list_slab_patients(), key=int)
    rule = [slabs[i] for i in range(2, len(slabs), 5)]
    assert rule == ["11", "41", "57", "98", "142", "166", "220"]
    assert set(rule) ^ set(spider.HELD_OUT_PATIENTS) == {"136", "142"}
    assert "142" in spider.train_slab_patients() and "136" in spider.held_out_slab_patients()
    assert "142_t2" in spider.train_mask_cases()
    assert not any(c.startswith("136_") for c in spider.train_mask_cases() + spider.held_out_mask_cases())


def test_generic_level_names():
    assert [spider.generic_level_name(v) for v in (1, 2, 5, 6, 100, 201, 202, 206)] == [
        "L5", "L4", "L1", "T12", "dural sac", "L5-S1 disc", "L4-5 disc", "T12-L1 disc"]


def test_manifest_and_split(spider_root):
    rows = spider.read_manifest()
    assert len(rows) == 39
    assert {r.numbering for r in rows} == {"A", "B"}
    for r in rows:
        assert r.path.is_file()
        assert (r.l4, r.l5) == ((2, 1) if r.numbering == "A" else (23, 24))
    train, held = spider.train_mask_cases(), spider.held_out_mask_cases()
    assert sorted(held) == sorted(spider.HELD_OUT_MASK_CASES)
    assert not set(train) & set(held) and len(train) + len(held) == 39
    # split by patient: no training series or slab belongs to a held-out patient
    assert not {c.split("_")[0] for c in train} & set(spider.HELD_OUT_PATIENTS)
    slabs = spider.list_slab_patients()
    assert len(slabs) == 35
    assert set(spider.held_out_slab_patients()) == set(spider.HELD_OUT_SLAB_PATIENTS)
    assert 0.15 <= len(spider.held_out_slab_patients()) / len(slabs) <= 0.25
    assert not set(spider.train_slab_patients()) & set(spider.HELD_OUT_PATIENTS)


@pytest.mark.parametrize("case", ["104_t2", "108_t2", "18_t2_SPACE", "98_t2_SPACE", "166_t2"])
def test_load_and_remap(spider_root, case):
    series = spider.get_series(case)
    mask = spider.load_mask(series)
    assert mask.size_ijk == series.size_xyz
    np.testing.assert_allclose(mask.spacing_mm, series.spacing_mm, atol=1e-4)
    assert mask.axis_codes() == series.orientation
    fora = spider.remap_labels(mask, series, "foramen")
    assert set(np.unique(fora.array)) == {0, L4, DISC_L45, L5}
    z = {lab: fora.index_to_lps(np.argwhere(fora.array == lab).mean(0)[::-1])[2] for lab in (L4, DISC_L45, L5)}
    assert z[L4] > z[DISC_L45] > z[L5]  # S-I order in LPS (z = superior), whatever the numbering scheme
    gen = spider.remap_labels(mask, series, "generic")
    np.testing.assert_array_equal(gen.array == 2, fora.array == L4)
    np.testing.assert_array_equal(gen.array == 202, fora.array == DISC_L45)
    assert set(np.unique(gen.array)) >= {0, 1, 2, 100, 201, 202}
    canal = spider.remap_labels(mask, series, "canal")
    np.testing.assert_array_equal(canal.array == 1, mask.array == series.canal_label)


def test_remap_rejects_unknown_scheme(spider_root):
    series = spider.get_series("104_t2")
    with pytest.raises(ValueError):
        spider.remap_labels(spider.load_mask(series), series, "vertebrae")
    with pytest.raises(InputError, match="not in masks/manifest.csv"):
        spider.get_series("1_t9")


@pytest.mark.parametrize("patient", ["18", "50", "98"])
def test_slab_geometry_matches_space_mask(spider_root, patient):
    """README: slice<N> = index N-1 along LR of the SPACE volume, rows S->I, cols A->P, 0.469 x 0.469 x 0.9 mm."""
    image, mask = spider.load_slab(patient)
    assert image.shape == mask.shape and image.array.dtype == np.uint8
    assert image.axis_codes() == "PIR"
    assert image.spacing_mm == pytest.approx((0.46875, 0.46875, 0.9), abs=1e-6)
    numbers = spider.slab_slice_numbers(patient)
    case = f"{patient}_t2_SPACE"
    ref = spider.collapse_to_slab_classes(spider.remap_labels(spider.load_mask(case), case, "generic"))
    sub = ref.array[numbers[0] - 1 : numbers[-1]]
    assert (sub == mask.array).mean() > 0.99
    # same physical space
    np.testing.assert_allclose(mask.index_to_lps((10, 20, 0)), ref.index_to_lps((10, 20, numbers[0] - 1)), atol=1e-6)
    assert set(np.unique(mask.array)) <= {0, spider.SLAB_VERTEBRA, spider.SLAB_DISC, spider.SLAB_CANAL}


def test_slab_nominal_geometry_and_errors(spider_root):
    image, mask = spider.load_slab("5")  # no SPACE mask: README's nominal geometry
    np.testing.assert_allclose(image.direction, spider.SLAB_DIRECTION)
    first = spider.slab_slice_numbers("5")[0]
    np.testing.assert_allclose(image.origin_mm, spider.SLAB_DIRECTION @ (np.array([0, 0, 0.9]) * (first - 1)))
    with pytest.raises(InputError, match="no T2 SPACE slab"):
        spider.load_slab("100000")


# ----------------------------------------------------------------------------- samples from SPIDER
def test_real_slab_planes(spider_root):
    from spinemorph import samples

    assert samples.dsca_real_slab_samples(["98"], min_area_mm2=1.0)  # the slab is narrow: few planes qualify
    planes = samples.dsca_real_slab_samples(["166"])
    assert len(planes) > 50
    _, mask = spider.load_slab("166")
    canal = mask.array == spider.SLAB_CANAL
    for p in planes:
        assert p.pixel_mm == pytest.approx((0.46875, 0.9))
        assert p.mask.shape == p.image.shape == (mask.shape[2], mask.shape[0])
        assert not p.mask[:, 0].any() and not p.mask[:, -1].any()  # canal inside the slab's LR extent
        assert p.area_mm2 == pytest.approx(canal[:, p.row, :].sum() * 0.46875 * 0.9)
        assert 10 <= p.area_mm2 < 400
    iso = {p.row: p for p in samples.dsca_real_slab_samples(["166"], isotropic_mm=0.45, min_area_mm2=0)}
    for p in planes[::10]:
        assert iso[p.row].pixel_mm == (0.45, 0.45)
        assert iso[p.row].area_mm2 == pytest.approx(p.area_mm2, rel=0.08)


def test_spider_samples(spider_root):
    from spinemorph import samples

    got = list(samples.dsca_samples(2, 3, sources=("spider_masks",), cases=["104_t2"], crop=96))
    for s in got:
        assert s.image.shape == (96, 96) and s.case == "104_t2"
        assert s.area_mm2 >= samples.MIN_SAC_AREA_MM2
    f = next(iter(samples.foramen_samples(1, 3, sources=("spider_masks",), cases=["104_t2"], crop_shape=(48, 96, 96))))
    assert f.image.shape == (48, 96, 96)
    assert set(np.unique(f.labels)) == {0, L4, DISC_L45, L5}
    z = {lab: f.grid.index_to_lps(np.argwhere(f.labels == lab).mean(0)[::-1])[2] for lab in (L4, L5)}
    assert z[L4] > z[L5]
    with pytest.raises(InputError, match="held out"):
        next(iter(samples.dsca_samples(1, 0, sources=("spider_masks",), cases=["98_t1"])))


def test_read_png_accepts_only_8bit_grey(tmp_path):
    """Grey (also stored as opaque RGBA with R = G = B) is read; 16-bit, colour or transparent PNGs are refused."""
    from skimage.io import imsave

    g = (np.arange(12 * 10).reshape(12, 10) % 251).astype(np.uint8)
    imsave(tmp_path / "grey.png", g, check_contrast=False)
    rgba = np.dstack([g, g, g, np.full_like(g, 255)])
    imsave(tmp_path / "rgba.png", rgba, check_contrast=False)
    np.testing.assert_array_equal(spider._read_png(tmp_path / "grey.png"), g)
    np.testing.assert_array_equal(spider._read_png(tmp_path / "rgba.png"), g)
    imsave(tmp_path / "wide.png", g.astype(np.uint16) * 300, check_contrast=False)
    colour = np.dstack([g, g // 2, g])
    imsave(tmp_path / "colour.png", colour, check_contrast=False)
    see_through = rgba.copy()
    see_through[0, 0, 3] = 0
    imsave(tmp_path / "alpha.png", see_through, check_contrast=False)
    with pytest.raises(InputError, match="uint16"):
        spider._read_png(tmp_path / "wide.png")
    with pytest.raises(InputError, match="colour"):
        spider._read_png(tmp_path / "colour.png")
    with pytest.raises(InputError, match="transparent"):
        spider._read_png(tmp_path / "alpha.png")
