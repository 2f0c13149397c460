"""Loaders for the real SPIDER lumbar spine MRI data (label volumes and T2 SPACE slabs).

The data live outside the repository (never commit them): ``$SPINEMORPH_SPIDER`` or, by default,
``<repo>/../shared/data/spider``. Layout (see that folder's ``README.md``):

- ``masks/<case>.mha`` + ``masks/manifest.csv``: 39 manual label volumes (sagittal T1/T2 and 3D T2 SPACE);
  labels 0 background, 100 spinal canal (dural sac), 2xx discs, 1-9 or 17-24 vertebrae in one of two
  numbering schemes (``numbering`` column, read per series):

  * scheme A: 1 = most caudal labelled vertebra (L5), counting up cranially; disc ``200+k`` lies directly
    below vertebra ``k`` (L5 = 1, L4 = 2, L4-5 disc = 202, L5-S1 disc = 201);
  * scheme B: 24 = L5, counting down cranially; disc ``200+k`` lies directly below vertebra ``k``
    (L5 = 24, L4 = 23, L4-5 disc = 223, L5-S1 disc = 224).

- ``t2space_slabs/images|masks/<patient>_t2_SPACE_slice<N>.png``: a central sagittal slab (13-26 slices) of real
  3D T2 SPACE images per patient with 3-class masks (76 vertebrae, 29 discs, 150 canal).

:func:`remap_labels` maps both numbering schemes to one of three common schemes:

- ``"foramen"``: 0 background, 1 L4, 2 L4-5 disc, 3 L5 (:data:`spinemorph.labels.FORAMEN_LABELS`);
- ``"canal"``: 0 background, 1 dural sac (SPIDER label 100);
- ``"generic"``: every vertebra and disc keeps its own label, numbered from L5 upwards like scheme A:
  vertebra ``n`` (1 = L5, 2 = L4, ..., 5 = L1, 6 = T12, ...), disc ``200 + n`` directly below vertebra ``n``
  (201 = L5-S1, 202 = L4-5), 100 dural sac. This is the input of the synthesis (every structure its own tissue).

Held-out split (never train on these): the split is by *patient*, so that no series or slab of a held-out patient is
seen in training. :data:`HELD_OUT_PATIENTS` is the fixed set ``11, 41, 57, 98, 136, 166, 220`` (7 of 35 slab
patients, 20 %). It was meant to follow the rule "sort the 35 slab patient ids numerically and take every 5th starting
with the 3rd (indices 2, 7, 12, ..., 32)", but deviates from that rule at one position: the rule gives patient 142 at
index 22, the constant has 136 (index 21) instead. So 136 is held out and **142 is a training patient** (its slab and
its sagittal T2 label volume ``142_t2`` are used in training). The constant is kept as it is because the shipped
models were trained with it; ``Testing/test_spider.py`` checks these facts so that this text and the constant cannot
drift apart. The set contains patient 98, whose slab covers the canal at every lumbar level and whose 3D T2 SPACE
label volume is in ``masks/``, and patients 166 and 220 whose sagittal T2 masks are in ``masks/`` (136 has no label
volume in ``masks/``). Hence the held-out mask series are ``98_t1``, ``98_t2_SPACE``, ``166_t2`` and ``220_t2``
(4 of 39).

Attribution (required for anything derived from these data): :data:`SPIDER_ATTRIBUTION`.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import os
import re
from pathlib import Path

import numpy as np

from spinemorph.errors import InputError
from spinemorph.labels import DISC_L45, L4, L5
from spinemorph.volume import Volume, read_volume

SPIDER_ATTRIBUTION = (
    "SPIDER lumbar spine MRI dataset: van der Graaf JW, van Hooff ML, Buckens CFM, et al. "
    '"Lumbar spine segmentation in MR images: a dataset and a public benchmark", Sci Data 11, 264 (2024); '
    "licensed CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/)."
)

#: environment variable naming the SPIDER folder
ENV_VAR = "SPINEMORPH_SPIDER"

#: SPIDER label of the spinal canal (CSF-filled dural sac); also the canal label of the "generic" scheme
CANAL_LABEL = 100

#: classes of the T2 SPACE slab PNG masks
SLAB_VERTEBRA, SLAB_DISC, SLAB_CANAL = 76, 29, 150

#: slab geometry stated in the data README (checked there against the SPACE label volumes of 18, 50, 98);
#: the label volumes store the pixel size as 0.46875 mm (= the README's 0.469 mm)
SLAB_PIXEL_MM = 0.46875
SLAB_SLICE_MM = 0.9

#: LPS directions of the slab volume axes: i = PNG column (anterior -> posterior), j = PNG row (superior ->
#: inferior), k = slice<N> index (left -> right), i.e. orientation "PIR" like the SPACE label volumes
SLAB_DIRECTION = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])

#: patients never used for training; NOTE: deviates at one position from the selection rule stated in the module
#: docstring (136 instead of 142; 142 is a training patient). Kept unchanged: the shipped models were trained with it.
HELD_OUT_PATIENTS: tuple[str, ...] = ("11", "41", "57", "98", "136", "166", "220")
#: held-out T2 SPACE slab patients (all slab patients of HELD_OUT_PATIENTS)
HELD_OUT_SLAB_PATIENTS: tuple[str, ...] = ("11", "41", "57", "98", "136", "166", "220")
#: held-out label volumes (every series in masks/ of a held-out patient)
HELD_OUT_MASK_CASES: tuple[str, ...] = ("98_t1", "98_t2_SPACE", "166_t2", "220_t2")

GENERIC_SCHEMES = ("generic", "foramen", "canal")

_SLICE_RE = re.compile(r"^(?P<patient>\d+)_t2_SPACE_slice(?P<n>\d+)\.png$")


# ----------------------------------------------------------------------------- location
def spider_root() -> Path | None:
    """Folder of the SPIDER data, or ``None`` when it is absent.

    ``$SPINEMORPH_SPIDER`` if set, else ``<repo>/../shared/data/spider`` (``<repo>`` = the folder holding the
    ``spinemorph`` package). The folder counts as present when ``masks/manifest.csv`` exists.
    """
    env = os.environ.get(ENV_VAR)
    root = Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data" / "spider"
    return root if (root / "masks" / "manifest.csv").is_file() else None


def _require_root() -> Path:
    root = spider_root()
    if root is None:
        raise InputError(
            f"SPIDER data not found (no masks/manifest.csv); set {ENV_VAR} to the spider folder "
            "(default <repo>/../shared/data/spider)"
        )
    return root


# ----------------------------------------------------------------------------- manifest
@dataclasses.dataclass(frozen=True)
class SpiderSeries:
    """One row of ``masks/manifest.csv``: a SPIDER label volume and its label numbering.

    Attributes
    ----------
    case : str
        File stem, e.g. ``"104_t2"`` or ``"98_t2_SPACE"``.
    patient : str
        Patient id (the part before the first ``_``).
    sequence : str
        ``"t1"``, ``"t2"`` or ``"t2_SPACE"``.
    size_xyz : tuple of int
        Voxels along i, j, k.
    spacing_mm : tuple of float
        Spacing along i, j, k (as SimpleITK reports it, rounded to 0.1 µm in the manifest).
    orientation : str
        Orientation code (``"LPS"`` or ``"PIR"``).
    vertebra_labels, disc_labels : tuple of int
        Label ids present.
    canal_label : int
        Label of the spinal canal (100).
    numbering : str
        ``"A"`` or ``"B"`` (see the module docstring).
    l4, l5, l4l5_disc, l5s1_disc : int
        Label ids of L4, L5, the L4-5 disc and the L5-S1 disc in this series.
    """

    case: str
    patient: str
    sequence: str
    size_xyz: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: str
    vertebra_labels: tuple[int, ...]
    disc_labels: tuple[int, ...]
    canal_label: int
    numbering: str
    l4: int
    l5: int
    l4l5_disc: int
    l5s1_disc: int

    @property
    def path(self) -> Path:
        """Path of the ``.mha`` label volume."""
        return _require_root() / "masks" / f"{self.case}.mha"

    @property
    def held_out(self) -> bool:
        """True if this series belongs to a held-out patient (never train on it)."""
        return self.case in HELD_OUT_MASK_CASES or self.patient in HELD_OUT_PATIENTS

    def vertebra_level(self, label: int) -> int:
        """Level number of a vertebra label counted from L5 upwards (1 = L5, 2 = L4, ...)."""
        return label if self.numbering == "A" else 25 - label


@functools.lru_cache(maxsize=4)
def _read_manifest_cached(path: str, mtime: float) -> tuple[SpiderSeries, ...]:
    rows = []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                rows.append(
                    SpiderSeries(
                        case=row["case"],
                        patient=row["case"].split("_")[0],
                        sequence=row["sequence"],
                        size_xyz=tuple(int(v) for v in row["size_xyz"].split("x")),
                        spacing_mm=tuple(float(v) for v in row["spacing_xyz_mm"].split("x")),
                        orientation=row["orientation"],
                        vertebra_labels=tuple(int(v) for v in row["vertebra_labels"].split()),
                        disc_labels=tuple(int(v) for v in row["disc_labels"].split()),
                        canal_label=int(row["canal_label"]),
                        numbering=row["numbering"].strip().upper(),
                        l4=int(row["L4"]),
                        l5=int(row["L5"]),
                        l4l5_disc=int(row["L4L5_disc"]),
                        l5s1_disc=int(row["L5S1_disc"]),
                    )
                )
            except (KeyError, ValueError) as exc:
                raise InputError(f"{path}: malformed manifest row {row.get('case', '?')!r} ({exc}); restore the file") from None
    for s in rows:
        if s.numbering not in ("A", "B"):
            raise InputError(f"{path}: series {s.case} has unknown numbering {s.numbering!r} (expected A or B)")
    return tuple(rows)


def read_manifest() -> list[SpiderSeries]:
    """All label volumes listed in ``masks/manifest.csv`` (held-out ones included; see :func:`train_mask_cases`)."""
    path = _require_root() / "masks" / "manifest.csv"
    return list(_read_manifest_cached(str(path), path.stat().st_mtime))


def get_series(case: str | SpiderSeries) -> SpiderSeries:
    """The manifest row of ``case`` (a case name such as ``"104_t2"`` or a :class:`SpiderSeries`)."""
    if isinstance(case, SpiderSeries):
        return case
    for s in read_manifest():
        if s.case == case:
            return s
    raise InputError(f"SPIDER case {case!r} is not in masks/manifest.csv; use one of the listed cases")


def train_mask_cases() -> list[str]:
    """Case names of the label volumes that may be used for training (held-out patients removed)."""
    return [s.case for s in read_manifest() if not s.held_out]


def held_out_mask_cases() -> list[str]:
    """Case names of the held-out label volumes (evaluation only)."""
    return [s.case for s in read_manifest() if s.held_out]


# ----------------------------------------------------------------------------- label volumes
def load_mask(case: str | SpiderSeries) -> Volume:
    """Read the SPIDER label volume of ``case`` (original labels, int16) with its geometry."""
    series = get_series(case)
    vol = read_volume(series.path)
    return vol.with_array(vol.array.astype(np.int16, copy=False))


def _lookup_table(series: SpiderSeries, target: str) -> dict[int, int]:
    table: dict[int, int] = {}
    if target == "generic":
        for v in series.vertebra_labels:
            table[v] = series.vertebra_level(v)
        for d in series.disc_labels:
            table[d] = 200 + series.vertebra_level(d - 200)
        table[series.canal_label] = CANAL_LABEL
    elif target == "foramen":
        table = {series.l4: L4, series.l4l5_disc: DISC_L45, series.l5: L5}
    elif target == "canal":
        table = {series.canal_label: 1}
    else:
        raise ValueError(f"unknown label scheme {target!r}; use one of {GENERIC_SCHEMES}")
    return table


def remap_labels(mask: Volume, series: str | SpiderSeries, target: str = "generic") -> Volume:
    """Map a SPIDER label volume (either numbering scheme) to a common scheme.

    Parameters
    ----------
    mask : Volume
        Label volume as read by :func:`load_mask`.
    series : str or SpiderSeries
        Its manifest row (or case name), which says the numbering scheme.
    target : {"generic", "foramen", "canal"}
        ``"foramen"``: 0 bg, 1 L4, 2 L4-5 disc, 3 L5; ``"canal"``: 1 dural sac; ``"generic"``: vertebra ``n``
        numbered from L5 = 1 upwards, disc ``200+n`` below vertebra ``n``, 100 dural sac. Labels not in the
        manifest row become 0.

    Returns
    -------
    Volume
        Same geometry; uint8 array for "foramen"/"canal", int16 for "generic".
    """
    series = get_series(series)
    table = _lookup_table(series, target)
    arr = np.asarray(mask.array)
    top = int(max(arr.max(initial=0), max(table, default=0))) + 1
    if arr.min(initial=0) < 0:
        raise InputError(f"label volume of {series.case} has negative labels; it is not a SPIDER mask")
    lut = np.zeros(top, dtype=np.int16)
    for src, dst in table.items():
        lut[src] = dst
    out = lut[arr]
    if target != "generic":
        out = out.astype(np.uint8)
    return mask.with_array(out)


def generic_level_name(label: int) -> str:
    """Anatomical name of a "generic" label: 1 -> "L5", 6 -> "T12", 202 -> "L4-5 disc", 100 -> "dural sac"."""

    def vert(n: int) -> str:
        if 1 <= n <= 5:
            return f"L{6 - n}"
        if 6 <= n <= 17:
            return f"T{18 - n}"
        return f"V{n}"

    if label == 0:
        return "background"
    if label == CANAL_LABEL:
        return "dural sac"
    if 200 < label < 300:
        n = label - 200
        upper, lower = vert(n), ("S1" if n == 1 else vert(n - 1))
        return f"{upper}-{lower[1:] if lower[0] == upper[0] else lower} disc"
    if 0 < label < 100:
        return vert(label)
    return f"label {label}"


# ----------------------------------------------------------------------------- T2 SPACE slabs
def _slab_files(root: Path) -> dict[str, dict[int, Path]]:
    folder = root / "t2space_slabs" / "images"
    out: dict[str, dict[int, Path]] = {}
    if not folder.is_dir():
        return out
    for p in folder.iterdir():
        m = _SLICE_RE.match(p.name)
        if m:
            out.setdefault(m["patient"], {})[int(m["n"])] = p
    return out


def list_slab_patients() -> list[str]:
    """Patient ids that have a T2 SPACE slab, sorted numerically."""
    return sorted(_slab_files(_require_root()), key=int)


def train_slab_patients() -> list[str]:
    """Slab patients that may be used for training (held-out patients removed)."""
    return [p for p in list_slab_patients() if p not in HELD_OUT_SLAB_PATIENTS and p not in HELD_OUT_PATIENTS]


def held_out_slab_patients() -> list[str]:
    """Held-out slab patients present in the data (evaluation only)."""
    return [p for p in list_slab_patients() if p in HELD_OUT_SLAB_PATIENTS or p in HELD_OUT_PATIENTS]


def _read_png(path: Path) -> np.ndarray:
    """A slab PNG as a 2D uint8 array; grey stored as RGB(A) (R = G = B, alpha 255) is reduced to one channel.

    Raises :class:`InputError` for anything else (16-bit, colour, transparent), instead of keeping one channel.
    """
    from skimage.io import imread

    try:
        a = imread(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from None
    if a.dtype != np.uint8:
        raise InputError(f"{path} holds {a.dtype} pixels; the SPIDER slab PNGs are 8-bit (uint8) grey images")
    if a.ndim == 3:  # grey stored as RGB(A): accepted only when it is grey (R = G = B, alpha opaque)
        if a.shape[-1] not in (3, 4):
            raise InputError(f"{path} has {a.shape[-1]} channels; expected a grey, RGB or RGBA PNG")
        rgb = a[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(f"{path} is a colour image (R, G, B differ); expected a grey image")
        if a.shape[-1] == 4 and not np.all(a[..., 3] == 255):
            raise InputError(f"{path} has transparent pixels; expected an opaque grey image")
        a = rgb[..., 0]
    elif a.ndim != 2:
        raise InputError(f"{path} has shape {a.shape}; expected a 2D grey image")
    return a


def slab_geometry(patient: str, first_slice: int) -> tuple[tuple[float, float, float], np.ndarray]:
    """Origin and direction of a slab volume whose index k = 0 is ``slice<first_slice>``.

    For patients with a T2 SPACE label volume in ``masks/`` (18, 50, 98) the geometry is that volume's
    (slice ``N`` = its index ``N-1`` along k), so slab and label volume share physical space. For the others the
    README's nominal geometry is used: direction :data:`SLAB_DIRECTION` (PIR) and an origin that puts the
    (virtual) full volume's voxel (0, 0, 0) at LPS (0, 0, 0).
    """
    case = f"{patient}_t2_SPACE"
    if any(s.case == case for s in read_manifest()):
        ref = load_mask(case)
        origin = ref.index_to_lps((0.0, 0.0, float(first_slice - 1)))
        return tuple(origin), ref.direction.copy()
    spacing = np.array([SLAB_PIXEL_MM, SLAB_PIXEL_MM, SLAB_SLICE_MM])
    origin = SLAB_DIRECTION @ (spacing * np.array([0.0, 0.0, first_slice - 1]))
    return tuple(origin), SLAB_DIRECTION.copy()


def load_slab(patient: str | int) -> tuple[Volume, Volume]:
    """Real T2 SPACE slab of ``patient`` as 3D volumes.

    Geometry (data README): PNG ``slice<N>`` is index ``N-1`` along the left-right axis; PNG rows run
    superior -> inferior, columns anterior -> posterior; pixel 0.469 x 0.469 mm (0.46875), 0.9 mm between slices;
    orientation PIR like the SPACE label volumes (see :func:`slab_geometry` for the origin).

    Returns
    -------
    image : Volume
        uint8 grey values as stored (rescaled per volume by the data provider), array ``[slice, row, col]``.
    mask : Volume
        uint8 classes as stored: 0 background, 76 vertebrae, 29 discs, 150 spinal canal.

    Raises
    ------
    InputError
        Unknown patient, missing mask PNG, slices of different sizes or a gap in the slice numbers.
    """
    root = _require_root()
    patient = str(patient)
    files = _slab_files(root).get(patient)
    if not files:
        raise InputError(f"no T2 SPACE slab for patient {patient}; available: {', '.join(list_slab_patients())}")
    numbers = sorted(files)
    if numbers != list(range(numbers[0], numbers[-1] + 1)):
        raise InputError(f"slab of patient {patient} has gaps in its slice numbers {numbers}; cannot stack it")
    imgs, masks = [], []
    for n in numbers:
        img = _read_png(files[n])
        mpath = root / "t2space_slabs" / "masks" / files[n].name
        if not mpath.is_file():
            raise InputError(f"mask {mpath} is missing for slab image {files[n].name}")
        m = _read_png(mpath)
        if img.shape != m.shape or (imgs and img.shape != imgs[0].shape):
            raise InputError(f"slab of patient {patient}: slice {n} has size {img.shape}, mask {m.shape}; sizes differ")
        imgs.append(img)  # uint8, checked by _read_png
        masks.append(m)
    origin, direction = slab_geometry(patient, numbers[0])
    spacing = (SLAB_PIXEL_MM, SLAB_PIXEL_MM, SLAB_SLICE_MM)
    image = Volume(np.stack(imgs), spacing, origin, direction)
    mask = Volume(np.stack(masks), spacing, origin, direction)
    return image, mask


def slab_slice_numbers(patient: str | int) -> list[int]:
    """The ``slice<N>`` numbers of a patient's slab (index k of :func:`load_slab` = position in this list)."""
    files = _slab_files(_require_root()).get(str(patient))
    if not files:
        raise InputError(f"no T2 SPACE slab for patient {patient}")
    return sorted(files)


def collapse_to_slab_classes(generic: Volume) -> Volume:
    """Collapse a "generic" label volume to the slab classes (76 vertebrae, 29 discs, 150 canal), uint8."""
    a = np.asarray(generic.array)
    out = np.zeros(a.shape, dtype=np.uint8)
    out[(a > 0) & (a < 100)] = SLAB_VERTEBRA
    out[(a > 200) & (a < 300)] = SLAB_DISC
    out[a == CANAL_LABEL] = SLAB_CANAL
    return generic.with_array(out)
