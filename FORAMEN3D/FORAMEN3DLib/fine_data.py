"""Training samples of the fine (0.8 mm) FORAMEN3D model: synthetic, phantom and real-slab crops around L4-5.

The fine model segments 5 classes (:data:`spinemorph.labels.FORAMEN5_LABELS`): 0 background, 1 L4, 2 L4-5 disc,
3 L5, 4 spinal canal (dural sac, SPIDER label 100 / slab mask value 150), on a **fine crop**: a 0.8 mm grid in the
canonical sagittal orientation (``PIR``, :data:`FORAMEN3DLib.preprocess.CANONICAL_AXES`) of :data:`FINE_SHAPE`
voxels placed relative to the centre of the L4-5 disc (:func:`fine_crop_grid`). Its size and offset come from the
extent of L4, L5 and the canal around the L4-5 disc centroid in the 35 SPIDER training label maps (0.5-99.5
percentiles, command ``scripts/fine_crop_extent.py``): anterior-posterior −25 … +82 mm, superior-inferior −47 … +37 mm
(L4 top to L5 bottom, posterior elements included), left-right −41 … +50 mm; the crop holds −34 … +94 mm (A-P),
−61.6 … +53.6 mm (S-I) and ±57.6 mm (L-R), so a locator error of about 8 mm still keeps both vertebrae with their
whole posterior arches inside.

Targets are **allowed-class bit masks** (uint8; bit ``c`` set = class ``c`` allowed), so that one loss handles full
and partial labels (:func:`FORAMEN3DLib.train_fine.partial_label_loss`):

* a fully labelled voxel has one bit;
* a real-slab voxel of the merged "vertebra" class whose level could not be derived allows {background, L4, L5}
  (L3, S1 ... are background in this scheme), a merged "disc" voxel {background, L4-5 disc};
* a voxel outside the imaged region (outside the slab's slices, outside a thick-slice mask's field of view) allows
  every class (:data:`IGNORE`): it adds nothing to the loss.

Sources (:func:`synthetic_sample`, :func:`phantom_sample`, :func:`slab_sample`): images synthesised (SynthSeg-style,
:mod:`spinemorph.synth`) from the SPIDER training label maps (thick-slice masks are upsampled to 0.8 mm by
:func:`spinemorph.synth.prepare_labels`' shape-based interpolation, i.e. smoothed, before synthesis); the procedural
phantom imaged by the T2 SPACE simulation; and the real T2 SPACE slabs (resampled linearly to the fine grid, labels
by nearest neighbour, loss only inside the imaged slices). Held-out patients (:mod:`spinemorph.spider`) are refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from spinemorph.errors import InputError, SpineMorphError
from spinemorph.intensity import zscore
from spinemorph.volume import Volume, resample_to_grid

from .preprocess import CANONICAL_AXES

#: fine grid spacing (mm): the source method's grid
FINE_SPACING_MM = 0.8
#: fine crop shape, array order (k = left->right, j = superior->inferior, i = anterior->posterior)
FINE_SHAPE = (144, 144, 160)
#: centre of the fine crop relative to the L4-5 disc centre, in canonical axes (i A->P, j S->I, k L->R), mm
FINE_OFFSET_MM = (30.0, -4.0, 0.0)
#: number of classes of the fine model
N_FINE_CLASSES = 5
BG, L4, DISC, L5, CANAL = 0, 1, 2, 3, 4
#: bit masks
IGNORE = 0b11111
MERGED_VERTEBRA = (1 << BG) | (1 << L4) | (1 << L5)
MERGED_DISC = (1 << BG) | (1 << DISC)
#: "generic" SPIDER labels (spinemorph.spider) -> fine class
GENERIC_TO_FINE = {2: L4, 202: DISC, 1: L5, 100: CANAL}


def bits_of(labels: np.ndarray) -> np.ndarray:
    """Bit masks of definite labels (0..4)."""
    return (np.uint8(1) << np.asarray(labels, np.uint8)).astype(np.uint8)


def definite_labels(bits: np.ndarray) -> np.ndarray:
    """Class of every voxel with exactly one allowed class; 255 elsewhere."""
    bits = np.asarray(bits, np.uint8)
    out = np.full(bits.shape, 255, np.uint8)
    for c in range(N_FINE_CLASSES):
        out[bits == (1 << c)] = c
    return out


def behind_canal_wall(canal: np.ndarray) -> np.ndarray:
    """Voxels at or behind the anterior canal wall of their row (array ``(k, j, i)``, i anterior → posterior): the
    region of the posterior arch (pedicles, articular processes, laminae, transverse and spinous processes).

    The wall of row ``j`` is the most anterior canal voxel of that row (any slice); rows without canal take the
    nearest row's wall; no canal at all: an empty region."""
    canal = np.asarray(canal, bool)
    per_row = canal.any(axis=0)  # (j, i)
    rows = np.nonzero(per_row.any(axis=1))[0]
    if len(rows) == 0:
        return np.zeros(canal.shape, bool)
    wall = per_row[rows].argmax(axis=1)
    nearest = np.abs(np.arange(canal.shape[1])[:, None] - rows[None, :]).argmin(1)
    i = np.arange(canal.shape[2])
    return np.broadcast_to((i[None, :] >= wall[nearest][:, None])[None], canal.shape)


def arch_voxels(bits: np.ndarray) -> np.ndarray:
    """Flat indices of the voxels that may be L4 or L5 bone (definite or merged vertebra labels) behind the anterior
    canal wall (:func:`behind_canal_wall` of the definite canal voxels): the posterior arches of a crop."""
    bits = np.asarray(bits, np.uint8)
    vert = ((bits & ((1 << L4) | (1 << L5))) != 0) & (bits != IGNORE)
    return np.flatnonzero(vert & behind_canal_wall(bits == (1 << CANAL)))


def arch_dice(truth: np.ndarray, pred: np.ndarray, known: np.ndarray) -> float:
    """Dice of L4 + L5 bone behind the anterior canal wall of ``truth`` (the posterior arches), on ``known`` voxels;
    NaN when neither has any."""
    region = behind_canal_wall(truth == CANAL) & known
    a = ((truth == L4) | (truth == L5)) & region
    b = ((pred == L4) | (pred == L5)) & region
    s = int(a.sum()) + int(b.sum())
    return 2.0 * float((a & b).sum()) / s if s else float("nan")


# ---------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True, eq=False)
class FineGrid:
    """Geometry of a fine crop (0.8 mm, canonical axes); ``shape`` is the array shape ``(k, j, i)``."""

    origin_mm: tuple[float, float, float]
    direction: np.ndarray
    shape: tuple[int, int, int] = FINE_SHAPE

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return (FINE_SPACING_MM,) * 3

    @property
    def size_ijk(self) -> tuple[int, int, int]:
        return (self.shape[2], self.shape[1], self.shape[0])

    def volume(self, array: np.ndarray) -> Volume:
        if tuple(array.shape) != tuple(self.shape):
            raise ValueError(f"array shape {array.shape} != fine grid shape {self.shape}")
        return Volume(array, self.spacing_mm, self.origin_mm, self.direction)

    def synth_grid(self):
        from spinemorph import synth

        return synth.Grid(self.size_ijk, self.spacing_mm, self.origin_mm, self.direction)


def fine_crop_grid(disc_center_lps, shift_mm=(0.0, 0.0, 0.0), shape=FINE_SHAPE, direction=None) -> FineGrid:
    """Fine crop grid around an L4-5 disc centre (LPS), shifted by ``shift_mm`` (canonical i, j, k axes, mm).

    ``direction`` defaults to :data:`CANONICAL_AXES` (PIR); the crop centre is the disc centre +
    :data:`FINE_OFFSET_MM` + ``shift_mm`` in that frame.
    """
    d = CANONICAL_AXES if direction is None else np.asarray(direction, float)
    n = np.array([shape[2], shape[1], shape[0]], float)
    centre = np.asarray(disc_center_lps, float) + d @ (np.asarray(FINE_OFFSET_MM) + np.asarray(shift_mm, float))
    origin = centre - d @ (FINE_SPACING_MM * (n - 1) / 2.0)
    return FineGrid(tuple(float(v) for v in origin), d.copy(), tuple(int(s) for s in shape))


def label_center_lps(vol: Volume, mask: np.ndarray) -> np.ndarray:
    """LPS centroid of the voxels of ``mask`` (array of ``vol``'s shape)."""
    idx = np.argwhere(mask)
    if len(idx) == 0:
        raise SpineMorphError("empty mask has no centre")
    return vol.index_to_lps(idx.mean(0)[::-1])


def normalise(image: np.ndarray, fov: np.ndarray) -> np.ndarray:
    """z-score inside the field of view, 0 outside (float32), as the fine inference does."""
    if fov.sum() < 100:
        return np.zeros(image.shape, np.float32)
    z = zscore(np.asarray(image, np.float32), fov)
    z[~fov] = 0.0
    return z.astype(np.float32)


# ---------------------------------------------------------------------- synthetic (SPIDER label maps)
_PREPARED: dict = {}


def _check_training_case(case: str) -> None:
    from spinemorph import spider

    if spider.get_series(case).held_out:
        raise SpineMorphError(f"{case} belongs to a held-out patient; it must never be used for training")


def prepared_case(case: str, allow_held_out: bool = False):
    """``(LabelSource, generic label Volume, L4-5 disc centre LPS)`` of a SPIDER label map (cached, a few kept)."""
    from spinemorph import spider, synth

    if not allow_held_out:
        _check_training_case(case)
    if case not in _PREPARED:
        generic = spider.remap_labels(spider.load_mask(case), case, "generic")
        centre = label_center_lps(generic, generic.array == 202)
        if len(_PREPARED) >= 3:
            _PREPARED.pop(next(iter(_PREPARED)))
        _PREPARED[case] = (synth.prepare_labels(generic, fine_spacing_mm=FINE_SPACING_MM), generic, centre)
    return _PREPARED[case]


def synthetic_sample(case: str, seed: int, jitter_mm: float = 8.0, contrast: str | None = None,
                     allow_held_out: bool = False, options=None) -> dict:
    """One synthesised fine crop of a SPIDER label map.

    Returns a dict: ``x`` float32 z-scored image (0 outside the label map's field of view), ``bits`` uint8
    allowed-class masks (:data:`IGNORE` outside the field of view), ``grid`` (:class:`FineGrid`), ``meta``.
    """
    from spinemorph import synth

    rng = np.random.default_rng(seed)
    src, generic, centre = prepared_case(case, allow_held_out)
    if contrast is None:
        contrast = str(rng.choice(["t2", "t2", "t2", "t1", "random"]))
    grid = fine_crop_grid(centre, rng.uniform(-1, 1, 3) * jitter_mm)
    res = synth.synthesize(src, int(rng.integers(2**31)), grid.synth_grid(), contrast, options)
    lut = np.zeros(int(max(int(res.labels.array.max()), 300)) + 1, np.uint8)
    for g, f in GENERIC_TO_FINE.items():
        lut[g] = f
    labels = lut[np.asarray(res.labels.array, np.int64)]
    # field of view of the label map (thick-slice masks cover 50-150 mm left-right): outside = unknown
    fov = resample_to_grid(generic.with_array(np.ones(generic.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "nearest").array.astype(bool)
    bits = np.where(fov, bits_of(labels), IGNORE).astype(np.uint8)
    x = normalise(np.where(fov, res.image.array, 0.0), fov)
    return {"x": x, "bits": bits, "grid": grid, "meta": {"source": "synth", "case": case, "seed": int(seed),
                                                          "contrast": contrast}}


# ---------------------------------------------------------------------- phantom
def phantom_sample(seed: int, jitter_mm: float = 8.0) -> dict:
    """Fine crop of the procedural phantom (random anatomy) imaged by the T2 SPACE simulation, exact labels."""
    from spinemorph import acquisition, phantom

    rng = np.random.default_rng(seed)
    ph = phantom.make_phantom(seed=int(rng.integers(1000)), vary=True)
    acq = acquisition.acquire_space_t2(ph, seed=int(rng.integers(2**31)))
    image = acq.image
    fo, sac = acq.labels["foramen"], acq.labels["dural_sac"]
    lab = np.asarray(fo.array, np.uint8).copy()
    lab[(np.asarray(sac.array) > 0) & (lab == 0)] = CANAL
    centre = label_center_lps(fo, np.asarray(fo.array) == DISC)
    grid = fine_crop_grid(centre, rng.uniform(-1, 1, 3) * jitter_mm)
    img = resample_to_grid(image.with_array(np.asarray(image.array, np.float32)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "linear").array
    labels = resample_to_grid(image.with_array(lab), grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction,
                              "nearest").array
    fov = resample_to_grid(image.with_array(np.ones(image.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "nearest").array.astype(bool)
    return {"x": normalise(img, fov), "bits": np.where(fov, bits_of(labels), IGNORE).astype(np.uint8), "grid": grid,
            "meta": {"source": "phantom", "case": "phantom", "seed": int(seed)}}


# ---------------------------------------------------------------------- real T2 SPACE slabs
@dataclasses.dataclass(frozen=True, eq=False)
class SlabLabels:
    """Fine-class knowledge of a real slab on its own grid.

    ``bits`` uint8 allowed-class masks on the slab grid; ``disc_center_lps`` the L4-5 disc centre (None when it
    could not be identified); ``identity`` how the levels were derived: ``"full-mask"`` (the patient's SPACE label
    volume), ``"counted"`` (counting up from the lowest labelled vertebra), ``"level-network"`` (training data only,
    :func:`FORAMEN3DLib.level_locator.slab_labels_from_levels`) or ``"merged"``.
    """

    bits: np.ndarray
    disc_center_lps: np.ndarray | None
    identity: str
    note: str


def _components_by_height(mask: np.ndarray, min_voxels: int):
    """Connected components (26-connectivity) of ``mask`` with ≥ ``min_voxels`` voxels, ordered inferior first
    (by mean row j: rows run superior -> inferior), as (label image, [component ids], {id: mean row})."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if n == 0:
        return lab, [], {}
    sizes = np.bincount(lab.ravel())
    rows = ndimage.mean(np.broadcast_to(np.arange(mask.shape[1])[None, :, None], mask.shape), lab,
                        index=np.arange(1, n + 1))
    ids = [i + 1 for i in range(n) if sizes[i + 1] >= min_voxels]
    ids.sort(key=lambda c: -rows[c - 1])
    return lab, ids, {c: float(rows[c - 1]) for c in ids}


#: a vertebral-body component longer than this (superior-inferior, mm) holds two vertebrae (a lumbar body with its
#: endplates is 25-35 mm high; two bodies and a disc exceed 55 mm)
MAX_BODY_SPAN_MM = 55.0


def slab_components(mask: Volume):
    """Vertebra and disc components of a slab mask, as :func:`slab_labels` counts them: vertebra components
    (26-connected) of at least 2 cm³ and disc components of at least 0.2 cm³, inferior first (label image, ids,
    {id: mean row}), and the vertebral bodies = vertebra components within 2 voxels of a disc (posterior-element
    fragments cut off by the narrow slab touch none). Returns ``(vlab, vids, vrows, dlab, dids, drows, bodies)``."""
    from spinemorph import spider

    m = np.asarray(mask.array)
    disc = m == spider.SLAB_DISC
    vox_mm3 = float(np.prod(mask.spacing_mm))
    vlab, vids, vrows = _components_by_height(m == spider.SLAB_VERTEBRA, int(2000 / vox_mm3))
    dlab, dids, drows = _components_by_height(disc, int(200 / vox_mm3))
    near_disc = ndimage.binary_dilation(disc, iterations=2)
    bodies = [c for c in vids if (near_disc & (vlab == c)).any()]
    return vlab, vids, vrows, dlab, dids, drows, bodies


def slab_labels(patient: str, image: Volume, mask: Volume) -> SlabLabels:
    """Derive L4 / L4-5 disc / L5 / canal on a real slab (see :class:`SlabLabels`).

    1. The patient's own 3D T2 SPACE label volume, when present (18, 50; same geometry as the slab, checked by the
       data README): its labels on the slab slices, restricted to the slab mask's classes.
    2. Counting: vertebral bodies = vertebra components (26-connected, ≥ 2 cm³) within 2 voxels of a disc, ordered
       from inferior up; the lowest is L5 (SPIDER labels no sacrum), the next L4, provided exactly one disc
       component lies between their centres and touches both (the L4-5 disc) and at most one disc component lies
       below L5 (L5-S1; more means that L5 / L4 are cut off the slab and a higher body was taken). Higher bodies are background;
       vertebra fragments that touch no disc (spinous processes cut off by the narrow slab) keep the merged class.
    3. Otherwise merged classes: vertebra → {bg, L4, L5}, disc → {bg, disc}; the disc centre is then unknown.
    """
    from spinemorph import spider

    m = np.asarray(mask.array)
    vert, disc, canal = m == spider.SLAB_VERTEBRA, m == spider.SLAB_DISC, m == spider.SLAB_CANAL
    bits = np.full(m.shape, 1 << BG, np.uint8)
    bits[canal] = 1 << CANAL
    case = f"{patient}_t2_SPACE"
    if any(s.case == case for s in spider.read_manifest()):
        gen = spider.remap_labels(spider.load_mask(case), case, "generic")
        first = spider.slab_slice_numbers(patient)[0]
        g = np.asarray(gen.array)[first - 1 : first - 1 + m.shape[0]]
        if g.shape == m.shape:
            bits[vert] = MERGED_VERTEBRA
            bits[disc] = MERGED_DISC
            bits[vert & (g == 2)] = 1 << L4
            bits[vert & (g == 1)] = 1 << L5
            bits[vert & (g > 2) & (g < 100)] = 1 << BG
            bits[disc & (g == 202)] = 1 << DISC
            bits[disc & (g > 200) & (g != 202)] = 1 << BG
            if (g == 202).any():
                return SlabLabels(bits, label_center_lps(mask, (g == 202) & disc), "full-mask", "own SPACE label volume")
    vlab, vids, vrows, dlab, dids, drows, bodies = slab_components(mask)
    if len(bodies) >= 2 and dids:
        l5, l4 = bodies[0], bodies[1]
        between = [c for c in dids if vrows[l4] < drows[c] < vrows[l5]]
        # a component holding two vertebrae would span > MAX_BODY_SPAN_MM superior-inferior
        spans = [np.ptp(np.nonzero((vlab == c).any(axis=(0, 2)))[0]) * mask.spacing_mm[1] for c in (l4, l5)]
        below = [c for c in dids if drows[c] > vrows[l5]]  # only the L5-S1 disc may lie below L5
        if len(between) == 1 and len(below) <= 1 and max(spans) < MAX_BODY_SPAN_MM:
            near = ndimage.binary_dilation(dlab == between[0], iterations=2)
            if (near & (vlab == l4)).any() and (near & (vlab == l5)).any():
                bits[vert] = MERGED_VERTEBRA  # fragments: level unknown
                for c in bodies[2:]:
                    bits[vlab == c] = 1 << BG  # L3 and above are background in the fine scheme
                bits[disc] = 1 << BG
                bits[vlab == l5] = 1 << L5
                bits[vlab == l4] = 1 << L4
                bits[dlab == between[0]] = 1 << DISC
                return SlabLabels(bits, label_center_lps(mask, dlab == between[0]), "counted",
                                  f"{len(bodies)} vertebral bodies / {len(vids)} vertebra / {len(dids)} disc components")
    bits[vert] = MERGED_VERTEBRA
    bits[disc] = MERGED_DISC
    return SlabLabels(bits, None, "merged", f"{len(vids)} vertebra / {len(dids)} disc components: levels not derived")


def slab_fine_crop(image: Volume, labels: SlabLabels, grid: FineGrid) -> tuple[np.ndarray, np.ndarray]:
    """A real slab on a fine grid: (z-scored image, allowed bits with :data:`IGNORE` outside the imaged slab)."""
    img = resample_to_grid(image.with_array(np.asarray(image.array, np.float32)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "linear").array
    bits = resample_to_grid(image.with_array(labels.bits), grid.spacing_mm, grid.size_ijk, grid.origin_mm,
                            grid.direction, "nearest").array
    fov = resample_to_grid(image.with_array(np.ones(image.shape, np.uint8)), grid.spacing_mm, grid.size_ijk,
                           grid.origin_mm, grid.direction, "nearest").array.astype(bool)
    return normalise(img, fov), np.where(fov, bits, IGNORE).astype(np.uint8)


def slab_sample(patient: str, seed: int, jitter_mm: float = 8.0, allow_held_out: bool = False,
                name_levels=None) -> dict:
    """Fine crop of a real T2 SPACE slab around its L4-5 disc (jittered; see :func:`slab_labels`). With
    ``name_levels(image, mask) -> SlabLabels | None`` (training only: the level network,
    :func:`FORAMEN3DLib.level_locator.slab_labels_from_levels`) a slab whose levels cannot be derived from the mask
    gets them where it accepts."""
    from spinemorph import spider

    patient = str(patient)
    if not allow_held_out and patient not in spider.train_slab_patients():
        raise SpineMorphError(f"slab patient {patient} is held out (or has no slab); it must never be used for training")
    image, mask = spider.load_slab(patient)
    lab = slab_labels(patient, image, mask)
    if lab.identity == "merged" and name_levels is not None:
        lab = name_levels(image, mask) or lab
    rng = np.random.default_rng(seed)
    centre = lab.disc_center_lps
    if centre is None:
        # levels unknown: centre on the second-lowest disc (L4-5 when no transitional anatomy); the loss is merged
        dlab, dids, _ = _components_by_height(np.asarray(mask.array) == spider.SLAB_DISC, 100)
        if not dids:
            raise InputError(f"slab of patient {patient} has no disc component")
        centre = label_center_lps(mask, dlab == dids[min(1, len(dids) - 1)])
    # the slab is narrow (12-23 mm left-right): keep the crop's left-right centre on the slab
    grid = fine_crop_grid(centre, rng.uniform(-1, 1, 3) * jitter_mm * np.array([1.0, 1.0, 0.25]))
    x, bits = slab_fine_crop(image, lab, grid)
    return {"x": x, "bits": bits, "grid": grid, "meta": {"source": "slab", "case": patient, "seed": int(seed),
                                                          "identity": lab.identity, "note": lab.note}}
