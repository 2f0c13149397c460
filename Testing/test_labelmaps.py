"""Input routing of ``spinemorph foramen measure``: label maps are recognised (foramen, SPIDER A / B, --label-ids)
and never segmented; a label map without usable L4 / disc / L5 gets one clear error."""

from __future__ import annotations

import numpy as np
import pytest

from spinemorph import labelmaps
from spinemorph.errors import InputError
from spinemorph.volume import Volume


def _vol(values, dtype=np.int16):
    a = np.zeros((4, 4, 4), dtype)
    flat = a.reshape(-1)
    for i, v in enumerate(values):
        flat[i] = v
    return Volume(a, (1.0, 1.0, 1.0))


def test_schemes_recognised():
    a = labelmaps.detect_scheme([0, 1, 2, 3, 4, 100, 201, 202, 203])
    assert (a.l4, a.disc, a.l5) == (2, 202, 1) and "SPIDER A" in a.name
    b = labelmaps.detect_scheme([0, 18, 19, 20, 21, 22, 23, 24, 100, 218, 222, 223, 224])
    assert (b.l4, b.disc, b.l5) == (23, 223, 24) and "SPIDER B" in b.name
    f = labelmaps.detect_scheme([0, 1, 2, 3])
    assert (f.l4, f.disc, f.l5) == (1, 2, 3)
    e = labelmaps.detect_scheme([0, 4, 5, 45], label_ids=labelmaps.parse_label_ids("4,45,5"))
    assert (e.l4, e.disc, e.l5) == (4, 45, 5)


@pytest.mark.parametrize(
    "values,ids,match",
    [
        ([0, 1, 3], None, "without 2"),
        ([0, 5, 6, 7, 100], None, "no usable L4"),
        ([0, 1, 2, 100, 201], None, "no usable L4"),  # scheme A without the L4-5 disc
        ([0, 4, 5], "4,45,5", "no L4-5 disc = 45"),
        ([0, 17, 30, 31], None, "no usable L4"),
    ],
)
def test_unusable_label_maps_one_error(values, ids, match):
    with pytest.raises(InputError, match=match) as ei:
        labelmaps.detect_scheme(values, labelmaps.parse_label_ids(ids) if ids else None)
    assert "\n" not in str(ei.value)


def test_label_ids_parsing():
    for bad in ("4,5", "a,b,c", "4,4,5", "0,1,2"):
        with pytest.raises(InputError, match="--label-ids"):
            labelmaps.parse_label_ids(bad)


def test_label_map_vs_image():
    assert labelmaps.is_label_map(_vol([1, 2, 202, 100, 24]))
    assert labelmaps.is_label_map(_vol([1, 2, 3], np.float32))  # integer-valued floats are labels too
    assert not labelmaps.is_label_map(_vol([1.5, 2, 3], np.float32))
    rng = np.random.default_rng(0)
    img = Volume(rng.integers(0, 1000, (8, 8, 8)).astype(np.int16), (1.0, 1.0, 1.0))
    assert not labelmaps.is_label_map(img)  # an integer MR image has many values


def test_to_foramen_labels():
    v = _vol([23, 223, 24, 100, 22])
    out = labelmaps.to_foramen_labels(v, labelmaps.detect_scheme([0, 22, 23, 24, 100, 223]))
    assert out.array.dtype == np.uint8
    assert out.array.reshape(-1)[:5].tolist() == [1, 2, 3, 0, 0]


def test_cli_routes_spider_numbering_without_segmenting(tmp_path, monkeypatch):
    """A label map in SPIDER numbering is measured as labels; the segmenter is never called."""
    import FORAMEN3DLib.segment3d as seg3d

    from spinemorph import phantom
    from spinemorph.app.cli import main
    from spinemorph.volume import write_volume

    vol, _ = phantom.realistic_foramen_phantom("realistic", 0.7, supersample=1)
    lut = np.array([0, 23, 223, 24], np.int16)  # scheme B
    path = tmp_path / "b.nrrd"
    write_volume(vol.with_array(lut[vol.array]), path)
    monkeypatch.setattr(seg3d, "segment_volume", lambda *a, **k: pytest.fail("a label map was segmented"))
    assert main(["foramen", "measure", str(path), "--out", str(tmp_path / "o"), "--no-meshes"]) == 0
    import json

    doc = json.loads((tmp_path / "o" / "measurements.json").read_text())
    assert doc["label_map"]["L4"] == 23 and doc["sides"]["left"]["qc_status"] in ("ok", "review")
    assert "QC" in (tmp_path / "o" / "measurements.csv").read_text().splitlines()[0]
    # a label map with no usable L4/disc/L5: one error, exit 1, nothing written
    bad = tmp_path / "bad.nrrd"
    write_volume(vol.with_array(np.where(vol.array > 0, 7, 0).astype(np.int16)), bad)
    assert main(["foramen", "measure", str(bad), "--out", str(tmp_path / "o2"), "--no-meshes"]) == 1
    assert not (tmp_path / "o2" / "measurements.json").exists()


def test_cli_measure_passes_a_hand_placed_l45_point(tmp_path, monkeypatch, capsys):
    """`foramen measure IMAGE --l45-point` hands the point (RAS converted to LPS) to the segmenter, records the
    locator, and refuses the point for a label map; `foramen segment` is a command of the `spinemorph` CLI."""
    import json
    import types

    import FORAMEN3DLib.segment3d as seg3d

    from spinemorph import phantom
    from spinemorph.app.cli import main
    from spinemorph.volume import write_volume

    labels, _ = phantom.realistic_foramen_phantom("realistic", 0.7, supersample=1)
    image = labels.with_array((labels.array * 37.5 + np.linspace(0, 1, labels.array.size).reshape(labels.array.shape))
                              .astype(np.float32))  # not a label map: many distinct values
    img_path = write_volume(image, tmp_path / "img.nrrd")
    calls = []

    def fake_segment_volume(vol, model="default", device="auto", progress=None, l45_point=None, **kw):
        calls.append(l45_point)
        return types.SimpleNamespace(labels=labels, model_name="fake", device="cpu", locator="manual point",
                                     qc=("test note",), timings_s={"total": 0.0})

    monkeypatch.setattr(seg3d, "segment_volume", fake_segment_volume)
    out = tmp_path / "o"
    assert main(["foramen", "measure", str(img_path), "--out", str(out), "--no-meshes",
                 "--l45-point=-10.5,20,30", "--ras"]) == 0
    assert calls == [(10.5, -20.0, 30.0)]
    seg = json.loads((out / "measurements.json").read_text())["segmentation"]
    assert seg["locator"] == "manual point" and seg["qc"] == ["test note"]
    lab_path = write_volume(labels, tmp_path / "lab.nrrd")
    assert main(["foramen", "measure", str(lab_path), "--out", str(tmp_path / "o2"), "--l45-point", "1,2,3"]) == 1
    assert "label map" in capsys.readouterr().err
    assert main(["foramen", "measure", str(img_path), "--out", str(tmp_path / "o3"), "--ras"]) == 1
    capsys.readouterr()
    # a segmentation the rules cannot measure (no posterior elements: a level off or a missed arch): no file, and the
    # error says where the problem is and what to do
    arr = np.array(labels.array)
    back = np.nonzero((arr == 2).any(axis=(0, 2)))[0].max() + 1  # LPS phantom: array axis 1 runs anterior -> posterior
    arr[:, back:, :][np.isin(arr[:, back:, :], (1, 3))] = 0  # vertebral bodies only: no pedicles, no arch
    bodies = labels.with_array(arr)
    monkeypatch.setattr(seg3d, "segment_volume", lambda vol, **kw: types.SimpleNamespace(
        labels=bodies, locator="coarse model", qc=("level check: test",), timings_s={}))
    bad = tmp_path / "o4"
    assert main(["foramen", "measure", str(img_path), "--out", str(bad), "--no-meshes"]) == 1
    err = capsys.readouterr().err
    assert "automatic segmentation" in err and "locator: coarse model" in err and "--l45-point" in err
    assert "QC: level check: test" in err and "foramen segment" in err
    assert not bad.exists() or not any(bad.rglob("*"))
    with pytest.raises(SystemExit) as exc:
        main(["foramen", "segment", "--help"])
    assert exc.value.code == 0 and "--l45-point" in capsys.readouterr().out
