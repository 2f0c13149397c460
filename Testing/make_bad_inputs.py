"""Corpus of bad and odd inputs, each with the one-line message and exit code SpineMorph must answer with.

Nothing here is committed as a binary: :func:`make_cases` writes every input into a folder and returns the
cases. Each :class:`BadInputCase` is either a command line (``argv`` for :func:`spinemorph.cli.main`) or a core
API call (``call``, which must raise :class:`spinemorph.errors.SpineMorphError`), with the words its message must
contain, the expected exit code, the ``--out`` folder that must hold no partial or temporary file afterwards, and an
optional simulation (disk full, unwritable folder, interrupt) active while it runs.

Run ``python Testing/make_bad_inputs.py DIR`` to write the corpus and print its table; add ``--run`` to run every case
and print what SpineMorph answered.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import gzip
import io
import os
import shutil
import struct
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: marker in a file name of an unfinished write (spinemorph.atomic temp files, spinemorph.batch staging folders)
TEMP_MARKERS = (".tmp", ".partial-", ".old-")


@dataclasses.dataclass
class BadInputCase:
    """One bad / odd input and the answer expected from SpineMorph.

    Attributes
    ----------
    name : str
        Unique kind of input (also the folder holding it).
    description : str
        What is wrong with the input.
    expect : tuple of str
        Words the one-line ``error:`` message (or the exception message of an API call) must contain
        (case-insensitive).
    exit_code : int
        Expected exit code of the command line (1 user error, 130 interrupted; unused for API calls).
    argv : list of str, optional
        Command line for :func:`spinemorph.cli.main`.
    call : callable, optional
        Core API call (no arguments) that must raise a :class:`~spinemorph.errors.SpineMorphError`.
    out_dir : Path, optional
        The ``--out`` folder; afterwards it may hold only ``keep`` (files there before the run, unchanged).
    keep : dict
        Relative path → bytes of files placed in ``out_dir`` before the run, which must survive unchanged.
    simulate : callable, optional
        Context manager factory active while the case runs (disk full, unwritable folder, interrupt).
    """

    name: str
    description: str
    expect: tuple[str, ...]
    exit_code: int = 1
    argv: list[str] | None = None
    call: Callable[[], object] | None = None
    out_dir: Path | None = None
    keep: dict[str, bytes] = dataclasses.field(default_factory=dict)
    simulate: Callable[[], contextlib.AbstractContextManager] | None = None

    @property
    def kind(self) -> str:
        return "cli" if self.argv is not None else "api"

    def prepare_out(self) -> None:
        """(Re)create the pre-existing files of ``out_dir`` before a run."""
        for rel, data in self.keep.items():
            p = self.out_dir / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)


# ---------------------------------------------------------------------- writers of odd files
def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _image(shape=(3, 48, 48), seed: int = 0, dtype=np.int16) -> np.ndarray:
    """A small MR-like array: noise plus a bright ellipse (so it is neither constant nor empty)."""
    k, j, i = shape
    jj, ii = np.mgrid[0:j, 0:i]
    disc = (((jj - j / 2) / (j / 3)) ** 2 + ((ii - i / 2) / (i / 4)) ** 2) < 1
    a = 100 + 20 * _rng(seed).standard_normal(shape) + 300 * disc[None]
    return a.astype(dtype)


def _write_sitk(arr: np.ndarray, path: Path, spacing=(0.7, 0.7, 4.0), direction=None, origin=(0, 0, 0), vector=False) -> Path:
    img = sitk.GetImageFromArray(arr, isVector=vector)
    img.SetSpacing(tuple(float(s) for s in spacing[: img.GetDimension()]))
    img.SetOrigin(tuple(float(o) for o in origin[: img.GetDimension()]))
    if direction is not None:
        img.SetDirection(tuple(np.asarray(direction, dtype=float).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path), False)
    return path


def _mha_header(size, spacing="0.7 0.7 4", element="MET_SHORT", extra: str = "") -> bytes:
    return (
        f"ObjectType = Image\nNDims = {len(size)}\nDimSize = {' '.join(map(str, size))}\n"
        + (f"ElementSpacing = {spacing}\n" if spacing is not None else "")
        + extra
        + f"ElementType = {element}\nElementDataFile = LOCAL\n"
    ).encode()


def _write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _nrrd(path: Path, arr: np.ndarray, header: dict) -> Path:
    import nrrd

    path.parent.mkdir(parents=True, exist_ok=True)
    nrrd.write(str(path), np.ascontiguousarray(arr.transpose(2, 1, 0)), header)
    return path


def _dicom_series(folder: Path, arr: np.ndarray, spacing=(0.7, 0.7, 4.0), direction=None, **kw) -> list[Path]:
    from spinemorph.dicomio import write_dicom_series
    from spinemorph.volume import Volume

    vol = Volume(arr, spacing, (0.0, 0.0, 0.0), np.eye(3) if direction is None else direction)
    return write_dicom_series(vol, folder, **kw)


def _dsca_weights(path: Path, arch: str = "attention_unet", state_from: str | None = None) -> Path:
    """A real DuralSacSeg weights file (random initialisation); ``state_from`` = another architecture's tensors."""
    import torch
    from DuralSacSegLib.models import save_weights
    from DuralSacSegLib.networks import build_network

    torch.manual_seed(0)
    net = build_network(state_from or arch)
    save_weights(path, net, state_from or arch)
    if state_from is not None:  # relabel: tensors of one network declared as another
        blob = torch.load(path, map_location="cpu", weights_only=True)
        blob["architecture"] = arch
        buf = io.BytesIO()
        torch.save(blob, buf)
        path.write_bytes(buf.getvalue())
    return path


def _foramen_weights(path: Path, mismatch: bool = False) -> Path:
    """A real (small, random) FORAMEN3D weights file; ``mismatch`` declares a wider network than its tensors."""
    import torch
    from FORAMEN3DLib.models3d import save_weights
    from FORAMEN3DLib.network3d import UNet3D

    torch.manual_seed(0)
    net = UNet3D(base_channels=4, depth=2, max_channels=16)
    save_weights(net, path)
    if mismatch:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        blob["network"] = {**blob["network"], "base_channels": 8}
        buf = io.BytesIO()
        torch.save(blob, buf)
        path.write_bytes(buf.getvalue())
    return path


def _foramen_box_labels(shape=(40, 40, 40), present=(1, 2, 3)) -> np.ndarray:
    """Three stacked blocks along k: 1 (L4) top, 2 (disc), 3 (L5); only the labels in ``present`` are kept."""
    a = np.zeros(shape, np.uint8)
    a[26:36, 10:30, 10:30] = 1
    a[20:26, 10:30, 10:30] = 2
    a[10:20, 10:30, 10:30] = 3
    a[~np.isin(a, present)] = 0
    return a


# ---------------------------------------------------------------------- simulations
def _under(path, folder: Path) -> bool:
    try:
        return Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(folder)))
    except (TypeError, ValueError):
        return False


@contextlib.contextmanager
def disk_full(folder: Path) -> Iterator[None]:
    """Every atomic write into ``folder`` fails with ENOSPC when its temp file is moved into place."""
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if _under(dst, folder):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
        return real_replace(src, dst, *a, **k)

    os.replace = replace
    try:
        yield
    finally:
        os.replace = real_replace


@contextlib.contextmanager
def unwritable(folder: Path) -> Iterator[None]:
    """``folder`` read-only (mode 0555); for root, who ignores modes, access checks and file creation fail too."""
    import tempfile

    folder.mkdir(parents=True, exist_ok=True)
    old_mode = folder.stat().st_mode
    os.chmod(folder, 0o555)
    real_access, real_mkstemp, real_mkdtemp = os.access, tempfile.mkstemp, tempfile.mkdtemp
    as_root = hasattr(os, "geteuid") and os.geteuid() == 0

    def access(path, mode, *a, **k):
        if mode & os.W_OK and _under(path, folder):
            return False
        return real_access(path, mode, *a, **k)

    def mkstemp(*a, dir=None, **k):  # noqa: A002 - tempfile's own name
        if dir is not None and _under(dir, folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkstemp(*a, dir=dir, **k)

    def mkdtemp(*a, dir=None, **k):  # noqa: A002
        if dir is not None and _under(dir, folder):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real_mkdtemp(*a, dir=dir, **k)

    if as_root:
        os.access, tempfile.mkstemp, tempfile.mkdtemp = access, mkstemp, mkdtemp
    try:
        yield
    finally:
        os.access, tempfile.mkstemp, tempfile.mkdtemp = real_access, real_mkstemp, real_mkdtemp
        os.chmod(folder, old_mode)


@contextlib.contextmanager
def interrupt_on_write(folder: Path) -> Iterator[None]:
    """Ctrl-C while the first output file's temporary copy is being written (after it holds some bytes)."""
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        if _under(dst, folder):
            raise KeyboardInterrupt
        return real_replace(src, dst, *a, **k)

    os.replace = replace
    try:
        yield
    finally:
        os.replace = real_replace


# ---------------------------------------------------------------------- the corpus
def make_cases(root: str | os.PathLike) -> list[BadInputCase]:
    """Write every bad input below ``root`` and return the cases (``root/<name>/`` inputs, ``root/out/<name>`` outputs)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    weights_dir = root / "weights"
    w_dsca = _dsca_weights(weights_dir / "dsca_attention_unet.pt")
    w_foramen = _foramen_weights(weights_dir / "foramen_small.pt")
    good = _write_sitk(_image(), root / "good" / "axial.nrrd")
    # 0.8 mm isotropic, 160 x 160 x 32 mm: covers the FORAMEN3D crop window in-plane
    good_3d = _write_sitk(_image((40, 200, 200), seed=3).astype(np.float32), root / "good" / "iso3d.nrrd", spacing=(0.8, 0.8, 0.8))
    labels_ok = _write_sitk(_foramen_box_labels(), root / "good" / "labels.nrrd", spacing=(0.8, 0.8, 0.8))

    cases: list[BadInputCase] = []

    def d(name: str) -> Path:
        p = root / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    def out(name: str) -> Path:
        return root / "out" / name

    def dsca(name, desc, input_path, expect, *extra, exit_code=1, model=None, **kw):
        o = kw.pop("out_dir", None) or out(name)
        argv = ["dsca", "segment", str(input_path), "--out", str(o), "--model", str(model or w_dsca), "--device", "cpu", *extra]
        cases.append(BadInputCase(name, desc, tuple(expect), exit_code, argv=argv, out_dir=o, **kw))

    def foramen(name, desc, input_path, expect, *extra, exit_code=1, **kw):
        o = kw.pop("out_dir", None) or out(name)
        argv = ["foramen", "measure", str(input_path), "--out", str(o), "--device", "cpu", "--no-meshes", *extra]
        cases.append(BadInputCase(name, desc, tuple(expect), exit_code, argv=argv, out_dir=o, **kw))

    def cli(name, desc, argv, expect, exit_code=1, out_dir=None, **kw):
        cases.append(BadInputCase(name, desc, tuple(expect), exit_code, argv=[str(a) for a in argv], out_dir=out_dir, **kw))

    def api(name, desc, call, expect, **kw):
        cases.append(BadInputCase(name, desc, tuple(expect), call=call, **kw))

    # ---- paths and folders
    dsca("missing_input", "input path does not exist", root / "nowhere" / "scan.nrrd", ["does not exist"])
    dsca("empty_folder", "empty input folder", d("empty_folder"), ["empty"])
    txt = _write_bytes(d("unsupported_file") / "notes.txt", b"not an image\n")
    dsca("unsupported_file", "a text file instead of an image", txt, ["unsupported file type"])

    # ---- pixel types and dimensions
    rgb = _write_sitk(np.stack([_image()] * 3, -1).astype(np.uint8), d("rgb") / "rgb.mha", vector=True)
    dsca("rgb", "RGB image (3 components per voxel)", rgb, ["components per voxel", "grey-scale"])
    four_d = sitk.JoinSeries([sitk.GetImageFromArray(_image(seed=s)) for s in range(3)])
    four_d_path = d("four_d") / "dynamic.nii.gz"
    sitk.WriteImage(four_d, str(four_d_path))
    dsca("four_d", "4D image (time series)", four_d_path, ["4D", "one 3D volume"])
    mf_dir = d("multiframe_dicom")
    files = _dicom_series(mf_dir, _image())
    import pydicom

    ds = pydicom.dcmread(files[0])
    ds.NumberOfFrames = 3
    ds.PixelData = _image().astype(np.uint16).tobytes()
    for f in files:
        f.unlink()
    ds.save_as(mf_dir / "MF0001.dcm")
    dsca("multiframe_dicom", "enhanced multi-frame DICOM file", mf_dir, ["multi-frame"])
    dsca("dim1", "1D image", _write_bytes(d("dim1") / "line.mha", _mha_header([16], "1") + bytes(32)), ["1D", "3D volume"])

    # ---- spacing
    dsca("zero_spacing_nrrd", "NRRD with zero spacing", _nrrd(d("zero_spacing_nrrd") / "z.nrrd", _image(), {"spacings": [0, 0, 0]}),
         ["zero voxel spacing"])
    dsca("missing_spacing_nrrd", "NRRD header without any spacing", _nrrd(d("missing_spacing_nrrd") / "m.nrrd", _image(), {}),
         ["no voxel spacing"])
    dsca("zero_spacing_mha", "MetaImage with ElementSpacing 0",
         _write_bytes(d("zero_spacing_mha") / "z.mha", _mha_header([48, 48, 3], "0 0 0") + _image().tobytes()), ["zero voxel spacing"])
    nii = _write_sitk(_image(), d("nan_spacing_nifti") / "n.nii")
    b = bytearray(nii.read_bytes())
    b[80:92] = struct.pack("<3f", float("nan"), 0.7, 4.0)
    nii.write_bytes(bytes(b))
    dsca("nan_spacing_nifti", "NIfTI with NaN pixdim", nii, ["zero voxel spacing"])
    dsca("absurd_spacing_large", "50 mm pixels (header in cm/inches?)", _write_sitk(_image(), d("absurd_spacing_large") / "a.nrrd", spacing=(50, 50, 40)),
         ["implausible voxel spacing"])
    dsca("absurd_spacing_small", "0.001 mm pixels (header in metres?)",
         _write_sitk(_image(), d("absurd_spacing_small") / "a.nrrd", spacing=(0.0007, 0.0007, 0.004)), ["implausible voxel spacing"])
    nsp = d("dicom_no_pixel_spacing")
    for f in _dicom_series(nsp, _image()):
        ds = pydicom.dcmread(f)
        del ds.PixelSpacing
        ds.save_as(f)
    dsca("dicom_no_pixel_spacing", "DICOM series without PixelSpacing", nsp, ["PixelSpacing"])

    # ---- direction
    dsca("nonorthogonal_mha", "sheared direction matrix (MetaImage)",
         _write_bytes(d("nonorthogonal_mha") / "s.mha", _mha_header([48, 48, 3], "0.7 0.7 4", extra="TransformMatrix = 1 0 0 0.7 1 0 0 0 1\n")
                      + _image().tobytes()), ["non-orthogonal direction"])
    sh = _write_sitk(_image(), d("nonorthogonal_nifti") / "s.nii")
    b = bytearray(sh.read_bytes())
    struct.pack_into("<h", b, 252, 0)
    struct.pack_into("<h", b, 254, 1)
    struct.pack_into("<12f", b, 280, 0.7, 0.4, 0, 0, 0, 0.7, 0, 0, 0, 0, 4.0, 0)
    sh.write_bytes(bytes(b))
    dsca("nonorthogonal_nifti", "sheared sform (NIfTI)", sh, ["non-orthogonal direction"])

    # ---- size
    dsca("tiny_image", "2 x 2 x 1 voxels", _write_sitk(_image((1, 2, 2)), d("tiny_image") / "t.nrrd"), ["too small"])
    dsca("huge_header", "header declares 40000 x 40000 x 4000 voxels",
         _write_bytes(d("huge_header") / "h.mha", _mha_header([40000, 40000, 4000]) + _image().tobytes()), ["voxel limit"])

    # ---- intensities
    nan_img = _image().astype(np.float32)
    nan_img[1, 10:20, 10:20] = np.nan
    dsca("nan_voxels", "float image with NaN voxels", _write_sitk(nan_img, d("nan_voxels") / "n.nrrd"), ["NaN or infinite"])
    inf_img = _image().astype(np.float32)
    inf_img[0, 0, 0] = np.inf
    dsca("inf_voxels", "float image with an infinite voxel", _write_sitk(inf_img, d("inf_voxels") / "i.nrrd"), ["NaN or infinite"])
    dsca("constant_image", "every voxel the same value", _write_sitk(np.full((3, 48, 48), 7, np.int16), d("constant_image") / "c.nrrd"),
         ["constant"])

    # ---- corrupt files
    good_bytes = good.read_bytes()
    dsca("truncated_nrrd", "NRRD whose pixel data stop half-way", _write_bytes(d("truncated_nrrd") / "t.nrrd", good_bytes[: len(good_bytes) // 2]),
         ["truncated"])
    dsca("garbage_nifti", "random bytes named .nii.gz", _write_bytes(d("garbage_nifti") / "g.nii.gz", gzip.compress(_rng(1).bytes(4000))),
         ["cannot read"])
    dsca("garbage_mha", "random bytes named .mha", _write_bytes(d("garbage_mha") / "g.mha", _rng(2).bytes(3000)), ["corrupt"])
    tr = d("truncated_dicom")
    f = _dicom_series(tr, _image((4, 48, 48)))[2]
    f.write_bytes(f.read_bytes()[:700])
    dsca("truncated_dicom", "one file of a DICOM series truncated", tr, ["truncated or corrupt"])
    cor = d("corrupt_dicom")
    for k in range(3):
        _write_bytes(cor / f"IM{k:05d}.dcm", _rng(10 + k).bytes(3000))
    dsca("corrupt_dicom", "DICOM folder of garbage files", cor, ["no DICOM series"])
    mixed = d("mixed_series")
    _dicom_series(mixed, _image(), series_description="axial T1", series_number=3)
    _dicom_series(mixed, _image(seed=5), series_description="axial T2", series_number=4, file_prefix="B")
    dsca("mixed_series", "two series in one folder", mixed, ["2 DICOM series", "--series"])
    dsca("unknown_series_uid", "--series names a series that is not there", mixed, ["not found"], "--series", "1.2.3.4")
    spp = d("dicom_invalid_samples_per_pixel")
    f = _dicom_series(spp, _image())[1]
    ds = pydicom.dcmread(f)
    ds.SamplesPerPixel = 2  # GDCM's scanner throws on it
    ds.save_as(f)
    dsca("dicom_invalid_samples_per_pixel", "DICOM file with SamplesPerPixel 2 (GDCM refuses to scan it)", spp, ["corrupt"])
    gap = d("dicom_missing_slice")
    files = _dicom_series(gap, _image((5, 48, 48)))
    files[2].unlink()
    dsca("dicom_missing_slice", "a slice file deleted from the series", gap, ["missing slices"])

    # ---- wrong acquisition for the task
    sag_dir = np.array([[0, 1, 0], [0, 0, -1], [-1, 0, 0]], float).T  # i -> P, j -> I, k -> R
    sag = _write_sitk(_image((12, 48, 48)), d("sagittal_thick_for_dsca") / "sag_t2.nrrd", spacing=(0.7, 0.7, 4.0), direction=sag_dir)
    dsca("sagittal_thick_for_dsca", "sagittal 2D series (4 mm slices) given to the axial DSCA task", sag, ["axial", "slices"])
    c45, s45 = np.cos(np.radians(45)), np.sin(np.radians(45))
    obl_dir = np.array([[1, 0, 0], [0, c45, s45], [0, -s45, c45]], float).T
    obl = _write_sitk(_image((6, 48, 48)), d("oblique_thick_for_dsca") / "obl.nrrd", spacing=(0.7, 0.7, 4.0), direction=obl_dir)
    dsca("oblique_thick_for_dsca", "thick-slice series tilted 45 deg from axial", obl, ["axial", "slices"])
    sag_lab = _write_sitk(_image((15, 64, 64)).astype(np.float32), d("sagittal_multislice_for_foramen") / "sag_t2.nrrd",
                          spacing=(0.8, 0.8, 4.0), direction=sag_dir)
    foramen("sagittal_multislice_for_foramen", "sagittal 2D multi-slice (4 mm) instead of a 3D SPACE volume", sag_lab,
            ["3D", "slices"], "--model", str(w_foramen))

    # ---- label maps
    foramen("labels_without_l4_l5", "label map holding only the disc (2), no L4 / L5", _write_sitk(
        _foramen_box_labels(present=(2,)), d("labels_without_l4_l5") / "disc_only.nrrd", spacing=(0.8, 0.8, 0.8)),
        ["L4", "L5"], "--labels-only")
    foramen("empty_segmentation", "label map of zeros", _write_sitk(np.zeros((40, 40, 40), np.uint8), d("empty_segmentation") / "zeros.nrrd",
            spacing=(0.8, 0.8, 0.8)), ["L4"], "--labels-only")
    foramen("labels_without_l4_l5_autodetect", "label map 0/2 (disc only) without --labels-only: must be recognised as a "
            "label map lacking L4 / L5, not segmented as an image", d("labels_without_l4_l5") / "disc_only.nrrd", ["L4", "L5"])
    plan_img = good_3d
    cli("plan_labels_without_l4_l5", "trajectory planning with a label map lacking L4 / L5",
        ["plan", plan_img, "--labels", d("labels_without_l4_l5") / "disc_only.nrrd", "--out", out("plan_labels_without_l4_l5")],
        ["L4", "L5"], out_dir=out("plan_labels_without_l4_l5"))
    cli("plan_empty_labels", "trajectory planning with an empty label map",
        ["plan", plan_img, "--labels", d("empty_segmentation") / "zeros.nrrd", "--out", out("plan_empty_labels")],
        ["empty"], out_dir=out("plan_empty_labels"))
    cli("plan_missing_labels_file", "--labels names a file that does not exist",
        ["plan", plan_img, "--labels", root / "nowhere.nrrd", "--out", out("plan_missing_labels_file")],
        ["does not exist"], out_dir=out("plan_missing_labels_file"))
    frac = _foramen_box_labels().astype(np.float32)
    frac[frac == 2] = 1.5
    foramen("non_integer_labels", "label map with fractional values", _write_sitk(frac, d("non_integer_labels") / "f.nrrd", spacing=(0.8,) * 3),
            ["label map"], "--labels-only")

    # ---- weights files
    dsca("weights_missing", "--model names a file that does not exist", good, ["does not exist"], model=root / "weights" / "absent.pt")
    wb = w_dsca.read_bytes()
    dsca("weights_truncated", "weights file cut in half", good, ["truncated"],
         model=_write_bytes(d("weights_truncated") / "half.pt", wb[: len(wb) // 2]))
    dsca("weights_empty", "0-byte weights file", good, ["empty"], model=_write_bytes(d("weights_empty") / "empty.pt", b""))
    import torch

    buf = io.BytesIO()
    torch.save({"epoch": 3, "note": "not a model"}, buf)
    dsca("weights_incompatible", "a .pt file that is not a SpineMorph weights file", good, ["not a SpineMorph"],
         model=_write_bytes(d("weights_incompatible") / "other.pt", buf.getvalue()))
    dsca("weights_wrong_architecture", "U-Net tensors declared as Attention U-Net", good, ["does not fit"],
         model=_dsca_weights(d("weights_wrong_architecture") / "mislabelled.pt", "attention_unet", state_from="unet"))
    dsca("weights_3d_for_2d", "FORAMEN3D weights given to the 2D DSCA task", good, ["not a SpineMorph"], model=w_foramen)
    foramen("weights_2d_for_3d", "DSCA weights given to the 3D foramen task", good_3d, ["not a FORAMEN3D weights file"], "--model", str(w_dsca))
    foramen("weights_3d_mismatch", "FORAMEN3D weights whose tensors do not fit the declared network", good_3d, ["do not fit"],
            "--model", str(_foramen_weights(d("weights_3d_mismatch") / "mismatch.pt", mismatch=True)))
    foramen("weights_3d_truncated", "FORAMEN3D weights cut in half", good_3d, ["truncated"],
            "--model", str(_write_bytes(d("weights_3d_truncated") / "half.pt", w_foramen.read_bytes()[:2000])))

    # ---- outputs
    exists = out("output_exists")
    dsca("output_exists", "--out already holds the results (no --overwrite)", good, ["already exists", "--overwrite"],
         out_dir=exists, keep={"dsca.csv": b"slice_index,area_mm2\n0,123.4\n"})
    as_file = _write_bytes(out("out_is_a_file"), b"I am a file\n")
    dsca("out_is_a_file", "--out is an existing file", good, ["not a folder"], out_dir=as_file,
         keep={})
    under_file = as_file / "sub"
    dsca("out_under_a_file", "--out lies below a file", good, ["cannot write"], out_dir=under_file)
    ro = out("unwritable_out")
    dsca("unwritable_out", "--out folder is read-only", good, ["not writable"], out_dir=ro, simulate=lambda: unwritable(ro))
    full = out("disk_full")
    cli("disk_full", "the disk fills up while the outputs are written", ["synth", labels_ok, "--out", full, "--n", "1"],
        ["no space left"], out_dir=full, simulate=lambda: disk_full(full))
    stop = out("interrupted")
    cli("interrupted", "Ctrl-C while an output file is being written", ["synth", labels_ok, "--out", stop, "--n", "1"],
        ["interrupted"], exit_code=130, out_dir=stop, simulate=lambda: interrupt_on_write(stop))

    # ---- options
    dsca("bad_levels_json", "--levels is not JSON", good, ["not valid JSON"], "--levels", "{L4-5: 12")
    dsca("bad_batch_size", "--batch-size 0", good, ["--batch-size"], "--batch-size", "0")
    cli("synth_image_as_labels", "an MR image (float values) given where a label map is expected",
        ["synth", _write_sitk(_image().astype(np.float32) / 7.0, d("synth_image_as_labels") / "img.nrrd"), "--out", out("synth_image_as_labels")],
        ["non-integer"], out_dir=out("synth_image_as_labels"))
    cli("batch_missing_folder", "batch over a folder that does not exist",
        ["batch", "dsca", root / "no_such_batch", "--out", out("batch_missing_folder")], ["does not exist"], out_dir=out("batch_missing_folder"))
    cli("batch_empty_folder", "batch over a folder without cases",
        ["batch", "dsca", d("batch_empty_folder"), "--out", out("batch_empty_folder")], ["holds no cases"], out_dir=out("batch_empty_folder"))
    cli("batch_args_with_out", "batch --args trying to set --out",
        ["batch", "dsca", d("empty_folder"), "--out", out("batch_args_with_out"), "--args", "--out elsewhere"], ["must not contain --out"],
        out_dir=out("batch_args_with_out"))

    # ---- core API entry points
    from spinemorph.volume import Volume

    def _segment_array():
        from DuralSacSegLib.segment import segment_volume

        return segment_volume(np.zeros((3, 48, 48)), predictor=lambda b: np.zeros_like(b))

    api("api_segment_not_a_volume", "segment_volume given a bare numpy array", _segment_array, ["Volume"])

    def _segment_nan():
        from DuralSacSegLib.segment import segment_volume

        a = _image().astype(np.float32)
        a[0, 0, 0] = np.nan
        return segment_volume(Volume(a, (0.7, 0.7, 4.0)), predictor=lambda b: np.zeros_like(b))

    api("api_segment_nan", "segment_volume on an image with NaN voxels", _segment_nan, ["NaN"])

    def _measure_empty():
        from FORAMEN3DLib.morphometry import measure_foramen

        return measure_foramen(Volume(np.zeros((20, 20, 20), np.uint8), (0.8,) * 3))

    api("api_measure_empty_labels", "measure_foramen on an empty label map", _measure_empty, ["none of the labels"])

    def _dsca_nan_mask():
        from DuralSacSegLib.dsca import compute_dsca_table

        m = np.zeros((2, 16, 16), np.float32)
        m[0, 0, 0] = np.nan
        return compute_dsca_table(Volume(m, (0.7, 0.7, 4.0)))

    api("api_dsca_nan_mask", "compute_dsca_table on a mask with NaN", _dsca_nan_mask, ["NaN"])

    def _load_foramen_weights_dsca():
        from FORAMEN3DLib.models3d import load_model

        return load_model(w_dsca, device="cpu")

    api("api_foramen_load_dsca_weights", "FORAMEN3D load_model on DSCA weights", _load_foramen_weights_dsca, ["not a FORAMEN3D"])

    def _read_sagittal_as_dicom_missing():
        from spinemorph.volume import read_dicom_series

        return read_dicom_series(mixed, series_uid="9.9.9")

    api("api_read_dicom_unknown_uid", "read_dicom_series with an unknown series UID", _read_sagittal_as_dicom_missing, ["not found"])
    return cases


def table(cases: list[BadInputCase]) -> str:
    """Markdown table of the corpus (name, entry point, expected words, exit code)."""
    lines = ["| case | entry point | problem | expected message words | exit |", "| --- | --- | --- | --- | --- |"]
    for c in cases:
        entry = ("spinemorph " + " ".join(c.argv[:2] if c.argv[0] in ("dsca", "foramen", "batch") else c.argv[:1])) if c.argv else "API"
        lines.append(f"| {c.name} | {entry} | {c.description} | {', '.join(c.expect)} | {c.exit_code if c.argv else '-'} |")
    return "\n".join(lines)


def run_case(case: BadInputCase) -> tuple[int, str]:
    """Run one case; return (exit code, the message). API calls: 1 and the SpineMorphError message (0 if none)."""
    import contextlib as _cl

    from spinemorph.app.cli import main
    from spinemorph.errors import SpineMorphError

    if case.out_dir is not None:
        case.prepare_out()
    sim = case.simulate() if case.simulate else _cl.nullcontext()
    if case.argv is not None:
        err = io.StringIO()
        with sim, _cl.redirect_stderr(err), _cl.redirect_stdout(io.StringIO()):
            code = main(list(case.argv))
        return code, err.getvalue()
    try:
        with sim:
            case.call()
    except SpineMorphError as exc:
        return 1, f"error: {exc}\n"
    return 0, ""


def _main(argv: list[str]) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write the bad-input corpus and print its table (optionally run it).")
    p.add_argument("folder", help="where to write the corpus (emptied first)")
    p.add_argument("--run", action="store_true", help="run every case and print the answer")
    a = p.parse_args(argv)
    root = Path(a.folder)
    if root.exists():
        shutil.rmtree(root)
    cases = make_cases(root)
    print(table(cases))
    print(f"\n{len(cases)} cases written to {root}")
    if a.run:
        import time

        for c in cases:
            t0 = time.perf_counter()
            code, msg = run_case(c)
            print(f"{time.perf_counter() - t0:6.2f} s ", end="")
            lines = [ln for ln in msg.splitlines() if ln.startswith("error:")]
            ok = code == (c.exit_code if c.argv else 1) and len(lines) == 1 and all(w.lower() in lines[0].lower() for w in c.expect)
            print(f"{'PASS' if ok else 'FAIL'} {c.name}: exit {code}: {lines[-1] if lines else msg.strip()[-300:]}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
