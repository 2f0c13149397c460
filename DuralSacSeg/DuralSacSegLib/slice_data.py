"""2D dural sac slice data sets: the :class:`SliceSample` type, the data sources of training and evaluation, the
documented evaluation splits and the resize to the network grid.

Sources (``spec["source"]``, :func:`load_dataset`): ``synthetic`` (images synthesised from SPIDER label maps,
:func:`spinemorph.samples.dsca_samples`; held-out patients with ``"held_out": true``,
:func:`spinemorph.samples.dsca_held_out_samples`), ``real-slabs`` (axial planes of the real T2 SPACE slabs),
``phantom`` (procedural phantom slices), ``folder`` (your own ``<case>_image`` / ``<case>_mask`` volumes) and
``tiny`` (unit tests only). Generated slices can be cached as ``.npz`` (``cache_dir``).

Used by :mod:`DuralSacSegLib.train` and :mod:`DuralSacSegLib.evaluate` (both re-export the public names).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_path
from spinemorph.errors import InputError

#: documented evaluation splits (data never trained on); ``spinemorph dsca evaluate --data NAME`` uses these
EVAL_SPECS: dict[str, dict] = {
    # planes synthesised from the held-out SPIDER label maps (patients 98, 166, 220), seed never used in training
    "synthetic": {"source": "synthetic", "held_out": True, "n": 60, "seed": 1001},
    # phantom anatomies with a seed never used in training
    "phantom": {"source": "phantom", "n": 60, "seed": 2002},
    # axial planes of the held-out real T2 SPACE slabs, 0.6 mm isotropic, every 4th PNG row (0.47 mm apart)
    "real-slabs": {"source": "real-slabs", "isotropic_mm": 0.6, "square": 320, "row_step": 4},
}

#: evaluation data sets (see :func:`load_dataset`)
DATASETS = ("synthetic", "real-slabs", "phantom")


# ----------------------------------------------------------------------------- samples
@dataclasses.dataclass
class SliceSample:
    """One 2D training / evaluation slice.

    Attributes
    ----------
    image : numpy.ndarray
        2D slice ``[row, column]``, raw intensities (normalised later by :func:`~DuralSacSegLib.models.prepare_slice`).
    mask : numpy.ndarray
        2D dural sac mask (0/1) on the same grid.
    pixel_mm : (float, float)
        Pixel size ``(sx, sy)`` along columns and rows in mm.
    group : str
        Patient / phantom id: cross-validation folds never split a group.
    source : str
        Where it comes from (for reports).
    true_area_mm2 : float or None
        Exact dural sac area when known (phantoms); else the mask's area.
    valid : numpy.ndarray or None
        Where the image holds data (0 = padding, e.g. outside a real slab strip); ``None`` = everywhere.
    """

    image: np.ndarray
    mask: np.ndarray
    pixel_mm: tuple[float, float] = (1.0, 1.0)
    group: str = ""
    source: str = ""
    true_area_mm2: float | None = None
    valid: np.ndarray | None = None

    @property
    def mask_area_mm2(self) -> float:
        if self.true_area_mm2 is not None:
            return float(self.true_area_mm2)
        return float(np.count_nonzero(self.mask)) * float(self.pixel_mm[0]) * float(self.pixel_mm[1])


def _patient_of(case: str) -> str:
    """Group of a sample: the SPIDER patient id (``"104_t2"`` → ``"104"``) or the phantom name."""
    case = str(case or "")
    return case.split("_")[0] if case[:1].isdigit() else case


def as_slice_sample(obj, source: str = "") -> SliceSample:
    """Convert a sample of :mod:`spinemorph.samples` to a :class:`SliceSample`.

    ``DscaSample``: isotropic ``pixel_mm`` (float), group = SPIDER patient (or phantom) of ``case``.
    ``RealSlabPlane``: ``pixel_mm`` is (row, column) spacing there and becomes (sx, sy) = (column, row) here;
    group = patient.
    """
    if isinstance(obj, SliceSample):
        return obj
    image = np.asarray(obj.image)
    mask = np.asarray(obj.mask)
    if image.ndim != 2 or image.shape != mask.shape:
        raise InputError(f"sample from {source or 'the data source'} is not a 2D image with a mask of the same shape")
    pixel = obj.pixel_mm
    if np.ndim(pixel) == 0:
        sx = sy = float(pixel)
    else:
        sy, sx = (float(p) for p in pixel)  # RealSlabPlane: (row spacing, column spacing)
    group = getattr(obj, "patient", None) or _patient_of(getattr(obj, "case", ""))
    return SliceSample(
        image=image.astype(np.float32, copy=False),
        mask=(mask > 0).astype(np.uint8),
        pixel_mm=(sx, sy),
        group=str(group),
        source=str(getattr(obj, "source", source) or source),
    )


def tiny_phantom_samples(n: int = 8, size: int = 64, seed: int = 0, pixel_mm: float = 1.0) -> list[SliceSample]:
    """Small ellipse phantoms with exact areas, for unit tests only (never used for the embedded weights).

    A bright ellipse (the "sac", area ``π a b`` mm²) inside a darker disc on a noisy background; half of the groups
    have no sac (negative slices).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    out = []
    for i in range(n):
        cx, cy = rng.uniform(0.35, 0.65, 2) * size
        a, b = rng.uniform(0.08, 0.16, 2) * size
        body = ((xx - size / 2) / (0.45 * size)) ** 2 + ((yy - size / 2) / (0.4 * size)) ** 2 <= 1
        sac = (((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1) if i % 4 != 3 else np.zeros_like(body)
        img = 0.1 + 0.3 * body + 0.5 * sac + rng.normal(0, 0.03, (size, size))
        out.append(
            SliceSample(
                image=img.astype(np.float32),
                mask=sac.astype(np.uint8),
                pixel_mm=(pixel_mm, pixel_mm),
                group=f"tiny{i % 4}",
                source="tiny-phantom",
            )
        )
    return out


def square_fov(sample: SliceSample, size: int) -> SliceSample:
    """Place a plane (e.g. a narrow real slab strip) on a ``size`` × ``size`` grid at its own pixel size.

    Rows are cropped around the sac (its centroid at 63 % of the height, like the canal in a full axial field of
    view) or padded; columns are centred and padded with the image minimum (no data outside the slab).
    """
    img, msk = sample.image, sample.mask
    fill = float(img.min())
    out_i = np.full((size, size), fill, np.float32)
    out_m = np.zeros((size, size), np.uint8)
    rows, cols = img.shape
    cy = float(np.argwhere(msk)[:, 0].mean()) if msk.any() else rows / 2
    r0 = int(round(cy - 0.63 * size))  # source row shown at output row 0
    c0 = (cols - size) // 2
    src_r = slice(max(r0, 0), min(r0 + size, rows))
    src_c = slice(max(c0, 0), min(c0 + size, cols))
    dst_r = slice(src_r.start - r0, src_r.stop - r0)
    dst_c = slice(src_c.start - c0, src_c.stop - c0)
    out_i[dst_r, dst_c] = img[src_r, src_c]
    out_m[dst_r, dst_c] = msk[src_r, src_c]
    valid = np.zeros((size, size), np.uint8)
    valid[dst_r, dst_c] = 1
    lost = int(msk.sum()) - int(out_m.sum())
    area = sample.mask_area_mm2 if lost == 0 else float(out_m.sum()) * sample.pixel_mm[0] * sample.pixel_mm[1]
    return dataclasses.replace(sample, image=out_i, mask=out_m, true_area_mm2=area, valid=valid)


#: image file endings a data folder may hold
FOLDER_SUFFIXES = (".nrrd", ".nii.gz", ".nii", ".mha", ".mhd")


def _folder_pairs(folder: Path) -> list[tuple[str, Path, Path]]:
    """``(case, image, mask)`` of a data folder: ``<case>_image.<ext>`` next to ``<case>_mask.<ext>``."""
    if not folder.is_dir():
        raise InputError(f"data folder {folder} does not exist or is not a folder")
    pairs, orphans = [], []
    for img in sorted(folder.iterdir()):
        name = img.name
        suffix = next((x for x in FOLDER_SUFFIXES if name.endswith(x)), None)
        if suffix is None or not name[: -len(suffix)].endswith("_image"):
            continue
        case = name[: -len(suffix) - len("_image")]
        mask = next((folder / f"{case}_mask{x}" for x in FOLDER_SUFFIXES if (folder / f"{case}_mask{x}").is_file()), None)
        if mask is None:
            orphans.append(name)
        else:
            pairs.append((case, img, mask))
    if orphans:
        raise InputError(f"data folder {folder}: no <case>_mask file for {', '.join(orphans[:5])}"
                         + (" ..." if len(orphans) > 5 else ""))
    if not pairs:
        raise InputError(f"data folder {folder} holds no <case>_image.<ext> + <case>_mask.<ext> pairs "
                         f"(ext one of {', '.join(FOLDER_SUFFIXES)})")
    return pairs


def folder_samples(path: str | os.PathLike, group_sep: str = "_") -> list[SliceSample]:
    """Axial slices of your own data: every ``<case>_image.<ext>`` with its ``<case>_mask.<ext>`` (dural sac > 0).

    Each volume pair must share its grid. Axial stacks are used as acquired; other volumes are resliced to axial
    planes (image linear, mask nearest; :func:`DuralSacSegLib.segment.reslice_to_axial`). Every slice becomes a sample
    (slices without dural sac included, as the source method trains on whole series); the cross-validation group is
    the case name up to the first ``group_sep`` (name cases ``<patient>_<series>`` to keep a patient in one fold).
    """
    from DuralSacSegLib.segment import is_axial, reslice_to_axial
    from spinemorph.volume import read_volume

    out: list[SliceSample] = []
    for case, img_path, mask_path in _folder_pairs(Path(path)):
        image, mask = read_volume(img_path), read_volume(mask_path)
        if image.shape != mask.shape or not np.allclose(image.affine_lps, mask.affine_lps, atol=1e-3):
            raise InputError(f"{mask_path.name} is not on the grid of {img_path.name} (size or geometry differs)")
        if image.array.ndim != 3:
            raise InputError(f"{img_path.name} is not a 3D volume")
        if not is_axial(image):
            image, mask = reslice_to_axial(image), reslice_to_axial(mask, interpolator="nearest")
        sx, sy, _ = image.spacing_mm
        group = case.split(group_sep)[0] if group_sep else case
        for k in range(image.shape[0]):
            out.append(SliceSample(image=np.asarray(image.array[k], np.float32),
                                   mask=(np.asarray(mask.array[k]) > 0).astype(np.uint8),
                                   pixel_mm=(float(sx), float(sy)), group=group, source=f"folder:{case}"))
    return out


def load_dataset(spec: dict | str, purpose: str = "evaluation") -> list[SliceSample]:
    """Load slices described by ``spec``.

    Parameters
    ----------
    spec : dict or str
        ``{"source": ..., ...}``:

        - ``"synthetic"``: :func:`spinemorph.samples.dsca_samples` (keys ``n``, ``seed`` and its other keyword
          arguments; training label maps only); with ``"held_out": true`` planes of the held-out SPIDER label maps
          instead (evaluation);
        - ``"phantom"``: ``dsca_samples(sources=("phantom",))`` (keys ``n``, ``seed``);
        - ``"real-slabs"``: :func:`spinemorph.samples.dsca_real_slab_samples` (key ``split``: ``"held_out"``
          (default, evaluation), ``"train"`` (training patients minus the validation split, every plane with canal,
          :func:`spinemorph.samples.dsca_real_slab_training_samples`) or ``"validation"``
          (:func:`spinemorph.samples.dsca_validation_slab_patients`); the held-out split takes the keys
          ``isotropic_mm``, ``patients``; ``row_step`` keeps every n-th PNG row), each plane placed on a ``square`` × ``square`` grid (key ``square``,
          default 320) at its own pixel size — the slab is a narrow left-right strip, resizing it to 320×320 would
          distort it;
        - ``"folder"``: your own data, :func:`folder_samples` (key ``path``: a folder of ``<case>_image.<ext>`` +
          ``<case>_mask.<ext>`` volumes);
        - ``"tiny"``: :func:`tiny_phantom_samples` (unit tests only).

        ``cache_dir``: keep the generated slices in an ``.npz`` there (keyed by the rest of the spec).
    purpose : str
        Used in error messages.
    """
    if isinstance(spec, str):
        spec = {"source": spec}
    spec = dict(spec)
    cache_dir = spec.pop("cache_dir", None)
    if cache_dir:
        cached = _read_cache(Path(cache_dir), spec)
        if cached is not None:
            return cached
    key_spec = dict(spec)
    source = spec.pop("source", "synthetic")
    if source == "tiny":
        raw = tiny_phantom_samples(**spec)
    elif source == "folder":
        if "path" not in spec:
            raise InputError(f"{purpose} data source 'folder' needs a 'path'")
        raw = folder_samples(spec.pop("path"), **spec)
    elif source in ("synthetic", "phantom", "real-slabs"):
        from spinemorph import samples as sm

        if source == "real-slabs":
            square = int(spec.pop("square", 320))
            every = int(spec.pop("row_step", 1))
            split = spec.pop("split", "held_out")
            if split == "held_out":
                planes = [p for p in sm.dsca_real_slab_samples(**spec) if p.row % every == 0]
            elif split in ("train", "validation"):
                # training patients only; every plane with canal (cut ones included): train / validate inside the strip
                pats = spec.pop("patients", None)
                if split == "validation":
                    pats = sm.dsca_validation_slab_patients() if pats is None else pats
                    held = [p for p in pats if p in sm.spider.HELD_OUT_PATIENTS]
                    if held:
                        raise InputError(f"validation slab patients {held} are held out; never tune on them")
                    planes = sm.dsca_real_slab_samples(pats, row_step=every, whole_sac_only=False, **spec)
                else:
                    planes = sm.dsca_real_slab_training_samples(pats, row_step=every, **spec)
            else:
                raise InputError(f"real-slabs split must be held_out, train or validation, got {split!r}")
            raw = [square_fov(as_slice_sample(p, source), square) for p in planes]
        elif source == "phantom":
            raw = list(sm.dsca_samples(sources=("phantom",), **spec))
        elif spec.pop("held_out", False):
            raw = list(sm.dsca_held_out_samples(**spec))
        else:
            raw = list(sm.dsca_samples(**spec))
    else:
        raise InputError(f"unknown {purpose} data source {source!r}; choose one of {', '.join(DATASETS)}")
    samples = [as_slice_sample(s, source) for s in raw]
    if not samples:
        raise InputError(f"{purpose} data source {source!r} gave no slices; check the data (SPIDER folder?)")
    if cache_dir:
        _write_cache(Path(cache_dir), key_spec, samples)
    return samples


def _cache_path(cache_dir: Path, spec: dict) -> Path:
    import hashlib

    keyed = {**spec, "_format": 2} if spec.get("source") == "real-slabs" else spec  # format 2: with the valid region
    key = hashlib.sha1(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir / f"dsca_samples_{spec.get('source', 'synthetic')}_{key}.npz"


def _read_cache(cache_dir: Path, spec: dict) -> list[SliceSample] | None:
    """Samples cached by :func:`_write_cache` for exactly this ``spec`` (``None`` if absent or unreadable)."""
    path = _cache_path(cache_dir, spec)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return [
                SliceSample(
                    z[f"image_{i}"], z[f"mask_{i}"], tuple(m["pixel_mm"]), m["group"], m["source"], m["true_area_mm2"],
                    z[f"valid_{i}"] if f"valid_{i}" in z.files else None,
                )
                for i, m in enumerate(meta)
            ]
    except (OSError, ValueError, KeyError):
        return None


def _write_cache(cache_dir: Path, spec: dict, samples: Sequence[SliceSample]) -> None:
    """Cache generated samples (synthesis is slow) as one ``.npz``, keyed by the spec's hash."""
    arrays = {}
    meta = []
    for i, s in enumerate(samples):
        arrays[f"image_{i}"] = s.image
        arrays[f"mask_{i}"] = s.mask
        if s.valid is not None:
            arrays[f"valid_{i}"] = s.valid
        meta.append({"pixel_mm": list(s.pixel_mm), "group": s.group, "source": s.source, "true_area_mm2": s.true_area_mm2})
    arrays["meta"] = np.array(json.dumps(meta))
    path = _cache_path(cache_dir, spec)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


# ----------------------------------------------------------------------------- network grid
def preprocess_samples(samples: Sequence[SliceSample], size=(320, 320)):
    """Resize + normalise every sample to the network grid.

    Returns
    -------
    images : float32 array (N, rows, cols)
    masks : uint8 array (N, rows, cols)
    pixel_area_mm2 : float64 array (N,) pixel area on the network grid
    """
    from DuralSacSegLib.models import prepare_slice, resize_mask

    n = len(samples)
    images = np.zeros((n, *size), dtype=np.float32)
    masks = np.zeros((n, *size), dtype=np.uint8)
    pix = np.zeros(n, dtype=np.float64)
    for idx, s in enumerate(samples):
        images[idx], (sx, sy) = prepare_slice(s.image, s.pixel_mm, size)
        masks[idx] = resize_mask(s.mask, s.pixel_mm, size)
        pix[idx] = sx * sy
    return images, masks, pix
