"""DICOM series writer (SimpleITK + pydicom round trips), .seg.nrrd / NIfTI label maps, the written study."""

from __future__ import annotations

import json

import nrrd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import UID

from spinemorph.acquisition import make_study
from spinemorph.dicomio import DicomStudy, deterministic_uid, read_dicom_headers, write_dicom_series
from spinemorph.errors import InputError, OutputError
from spinemorph.phantom import make_phantom
from spinemorph.segio import read_seg_nrrd, write_labelmap_nifti, write_seg_nrrd
from spinemorph.volume import Volume, read_volume


def _oblique_volume(dtype=np.float32, seed=0) -> Volume:
    th = np.radians(17.0)
    rot = np.array([[1, 0, 0], [0, np.cos(th), -np.sin(th)], [0, np.sin(th), np.cos(th)]])
    rng = np.random.default_rng(seed)
    arr = rng.random((6, 24, 20)) * 1500 - 300
    return Volume(arr.astype(dtype), (0.6875, 0.7, 3.5), (-12.5, 40.25, -7.0), rot)


def _sitk_read(folder) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return reader.Execute()


def test_float_volume_roundtrip_sitk(tmp_path):
    vol = _oblique_volume()
    files = write_dicom_series(vol, tmp_path / "s", series_description="oblique test")
    assert len(files) == 6
    img = _sitk_read(tmp_path / "s")
    assert img.GetSize() == (20, 24, 6)
    np.testing.assert_allclose(img.GetSpacing(), vol.spacing_mm, atol=1e-4)
    np.testing.assert_allclose(img.GetOrigin(), vol.origin_mm, atol=1e-4)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), vol.direction, atol=1e-6)
    back = sitk.GetArrayFromImage(img).astype(float)
    assert np.abs(back - vol.array).max() < 1.0  # rescale slope/intercept applied by the reader
    # spinemorph's own reader agrees
    r = read_volume(tmp_path / "s")
    assert r.axis_codes() == vol.axis_codes() and np.abs(r.array - vol.array).max() < 1.0


def test_integer_volume_exact_and_sagittal_geometry(tmp_path):
    ph = make_phantom()
    grid = ph.space_grid(n_slices=5, size=(30, 40), spacing_mm=0.8)
    arr = (np.arange(grid.array.size) % 4000).reshape(grid.shape).astype(np.uint16)
    vol = grid.with_array(arr)
    write_dicom_series(vol, tmp_path / "sag", mr={"MRAcquisitionType": "3D", "RepetitionTime": 1500.0})
    img = _sitk_read(tmp_path / "sag")
    assert np.array_equal(sitk.GetArrayFromImage(img), arr)
    np.testing.assert_allclose(img.GetOrigin(), grid.origin_mm, atol=1e-4)
    np.testing.assert_allclose(np.array(img.GetDirection()).reshape(3, 3), grid.direction, atol=1e-6)
    assert Volume.from_sitk(img).axis_codes() == "PIR"


def test_pydicom_tags_and_uids(tmp_path):
    vol = _oblique_volume()
    study = DicomStudy(seed=4)
    write_dicom_series(vol, tmp_path / "a", study=study, series_description="axial T1", series_number=3,
                       mr={"RepetitionTime": 550.0, "EchoTime": 10.0, "SliceThickness": 3.0})
    write_dicom_series(vol, tmp_path / "b", study=study, series_description="other", series_number=4)
    a, b = read_dicom_headers(tmp_path / "a"), read_dicom_headers(tmp_path / "b")
    sops = {ds.SOPInstanceUID for ds in a + b}
    assert len(sops) == 12
    for ds in a:
        assert ds.Modality == "MR" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        for uid in (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.StudyInstanceUID, ds.FrameOfReferenceUID):
            assert UID(uid).is_valid and len(uid) <= 64
        assert ds.StudyInstanceUID == study.study_uid and ds.FrameOfReferenceUID == study.frame_of_reference_uid
        assert ds.SeriesDescription == "axial T1" and ds.SeriesNumber == 3
        assert ds.PatientID == study.patient_id and str(ds.PatientName) == study.patient_name
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([0.7, 0.6875])
        assert float(ds.SliceThickness) == 3.0 and float(ds.SpacingBetweenSlices) == pytest.approx(3.5)
        assert float(ds.RepetitionTime) == 550.0 and float(ds.EchoTime) == 10.0
        assert ds.Rows == 24 and ds.Columns == 20 and ds.BitsStored == 16
        k = ds.InstanceNumber - 1
        expect = np.asarray(vol.origin_mm) + vol.direction[:, 2] * vol.spacing_mm[2] * k
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient], expect, atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], vol.direction[:, :2].T.ravel(), atol=1e-8)
    assert a[0].SeriesInstanceUID != b[0].SeriesInstanceUID and a[0].StudyInstanceUID == b[0].StudyInstanceUID
    full = pydicom.dcmread(sorted((tmp_path / "a").glob("*.dcm"))[2])
    pix = full.pixel_array * float(full.RescaleSlope) + float(full.RescaleIntercept)
    assert np.abs(pix - vol.array[full.InstanceNumber - 1]).max() < 1.0


def test_dicom_deterministic_and_no_overwrite(tmp_path):
    vol = _oblique_volume(np.int16)
    f1 = write_dicom_series(vol, tmp_path / "x", study=DicomStudy(seed=1))
    f2 = write_dicom_series(vol, tmp_path / "y", study=DicomStudy(seed=1))
    assert [p.read_bytes() for p in f1] == [p.read_bytes() for p in f2]
    f3 = write_dicom_series(vol, tmp_path / "z", study=DicomStudy(seed=2))
    assert f1[0].read_bytes() != f3[0].read_bytes()
    assert deterministic_uid("a", 1) == deterministic_uid("a", 1) != deterministic_uid("a", 2)
    with pytest.raises(OutputError):
        write_dicom_series(vol, tmp_path / "x", study=DicomStudy(seed=1))
    write_dicom_series(vol, tmp_path / "x", study=DicomStudy(seed=1), overwrite=True)
    with pytest.raises(InputError):
        write_dicom_series(Volume(np.full((2, 3, 3), np.nan)), tmp_path / "nan")


def test_seg_nrrd_roundtrip(tmp_path):
    ph = make_phantom()
    grid = ph.space_grid(n_slices=24, size=(60, 70), spacing_mm=1.5)
    lab = ph.rasterize_labels(grid, "foramen")
    segs = {1: ("L4", (0.9, 0.85, 0.55)), 2: ("L4-5 disc", (0.4, 0.7, 0.95)), 3: ("L5", (0.85, 0.6, 0.4))}
    path = write_seg_nrrd(lab, segs, tmp_path / "f.seg.nrrd")
    back, bsegs = read_seg_nrrd(path)
    assert np.array_equal(back.array, lab.array)
    np.testing.assert_allclose(back.spacing_mm, lab.spacing_mm)
    np.testing.assert_allclose(back.origin_mm, lab.origin_mm)
    np.testing.assert_allclose(back.direction, lab.direction, atol=1e-12)
    assert {k: v[0] for k, v in bsegs.items()} == {k: v[0] for k, v in segs.items()}
    for k in segs:
        assert bsegs[k][1] == pytest.approx(segs[k][1])
    header = nrrd.read_header(str(path))
    assert header["space"] == "left-posterior-superior"
    assert header["Segment1_Name"] == "L4-5 disc" and header["Segment1_LabelValue"] == "2"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    with pytest.raises(InputError):
        write_seg_nrrd(lab, {1: ("L4", (1, 0, 0))}, tmp_path / "bad.seg.nrrd")  # labels 2, 3 unnamed
    with pytest.raises(InputError):
        read_seg_nrrd(tmp_path / "missing.seg.nrrd")


def test_labelmap_nifti(tmp_path):
    ph = make_phantom()
    grid = ph.axial_grid(mode="disc", size=48, n_slices=3)
    lab = ph.rasterize_labels(grid, "dural_sac")
    p = write_labelmap_nifti(lab, tmp_path / "sac.nii.gz")
    img = sitk.ReadImage(str(p))
    assert img.GetPixelID() == sitk.sitkUInt8
    assert np.array_equal(sitk.GetArrayFromImage(img), lab.array)
    np.testing.assert_allclose(img.GetOrigin(), lab.origin_mm, atol=1e-4)


def test_make_study_small(tmp_path):
    kw = dict(axial={"size": 128, "supersample": (1, 1, 2)}, space={"n_slices": 16, "size": (96, 96), "supersample": 1})
    res = make_study(tmp_path / "st", seed=2, formats="dicom,nifti", preset="central-stenosis", **kw)
    files = res["files"]
    ax = read_volume(files["axial_t1_dicom"])
    sp = read_volume(files["sagittal_t2_space_dicom"])
    assert ax.axis_codes() == "LPS" and sp.axis_codes() == "PIR" and sp.size_ijk == (96, 96, 16)
    assert ax.array.max() > 500
    truth = json.loads(files["truth"].read_text())
    assert len(truth["axial_slices"]) == ax.size_ijk[2]
    assert truth["truth"]["dsca_perpendicular_at_disc_mm2"] < 100
    hdr = read_dicom_headers(files["sagittal_t2_space_dicom"])
    assert hdr[0].MRAcquisitionType == "3D" and hdr[0].StudyInstanceUID == truth["dicom"]["study_uid"]
    seg = sitk.ReadImage(str(files["sagittal_t2_space_foramen_nifti"]))
    assert set(np.unique(sitk.GetArrayFromImage(seg))) == {0, 1, 2, 3}
    with pytest.raises(OutputError):
        make_study(tmp_path / "st", seed=2, formats="nifti")


def test_make_study_byte_identical_per_seed(tmp_path):
    kw = dict(axial={"size": 64, "n_slices": 4}, space={"n_slices": 6, "size": (48, 48), "supersample": 1})
    make_study(tmp_path / "a", seed=9, formats="dicom,nrrd,nifti", **kw)
    make_study(tmp_path / "b", seed=9, formats="dicom,nrrd,nifti", **kw)
    make_study(tmp_path / "c", seed=10, formats="nrrd", **kw)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 4 + 6 + 2 + 5 * 2 + 2 + 2  # dicom slices, images, label maps (seg.nrrd + nii.gz), json/csv
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a" / "axial_t1.nrrd").read_bytes() != (tmp_path / "c" / "axial_t1.nrrd").read_bytes()


def test_failure_at_a_slice_leaves_no_partial_series(tmp_path, monkeypatch):
    """An error while writing slice 3 of 6 leaves nothing behind (new folder) or the old series intact (overwrite)."""
    from pydicom.dataset import Dataset

    vol = _oblique_volume(np.int16)
    real_save = Dataset.save_as
    calls = {"n": 0}

    def failing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Dataset, "save_as", failing_save)
    with pytest.raises(OutputError, match="(?i)no space left"):
        write_dicom_series(vol, tmp_path / "new")
    assert not (tmp_path / "new").exists()

    monkeypatch.setattr(Dataset, "save_as", real_save)
    old = write_dicom_series(vol, tmp_path / "kept", study=DicomStudy(seed=1))
    before = {p.name: p.read_bytes() for p in old}
    (tmp_path / "kept" / "notes.txt").write_text("keep me")
    calls["n"] = 0
    monkeypatch.setattr(Dataset, "save_as", failing_save)
    with pytest.raises(OutputError):
        write_dicom_series(vol, tmp_path / "kept", study=DicomStudy(seed=2), overwrite=True)
    after = {p.name: p.read_bytes() for p in (tmp_path / "kept").iterdir()}
    assert after == {**before, "notes.txt": b"keep me"}  # old series intact, no staging folder left
