"""DuralSacSeg inference: dural sac mask and per-slice DSCA table from an MR volume.

Pipeline of :func:`segment_volume`:

1. **Axial stack.** An input whose slice normal is within ``axial_tolerance_deg`` (default 30°) of the patient S-I axis
   is used as acquired (gantry tilt allowed: the slice planes stay the acquired ones). Any other input (e.g. a
   sagittal 3D T2 SPACE) is **resliced** onto axial planes with SimpleITK (linear): direction = LPS identity (i → left,
   j → posterior, k → superior), covering the input's bounding box, in-plane pixel = the input's smallest spacing,
   planes every ``slice_spacing_mm`` (default: the input's spacing along its most S-I axis, at least
   :data:`DEFAULT_MIN_RESLICE_SPACING_MM` = 1 mm). Each resliced plane is a point sample of the input by trilinear
   interpolation, so its effective slice thickness is the input's own resolution along S-I (no thick-slab averaging).
2. **Network grid.** Every axial slice is resampled (linear) to the 320 × 320 network grid: the slice's field of view
   is padded symmetrically to a square of side ``L = max(ni·sx, nj·sy)`` (aspect ratio kept, no distortion) and
   sampled at ``L / 320`` mm pixels, in the slice's own plane and orientation (in-plane Gaussian anti-aliasing first
   when shrinking, as ``skimage.transform.resize`` does). The pixel size is thus known exactly; each slice is
   normalised with :func:`spinemorph.intensity.normalize_percentile`. (A square 320 × 320 slice maps 1:1; the padding
   keeps non-square fields of view undistorted, e.g. the narrow left-right extent of a resliced sagittal slab.)
3. **Prediction** in batches of slices (``torch.inference_mode``) by the network from
   :func:`DuralSacSegLib.models.load_model` (sigmoid of the logits), or by any injected ``predictor(batch) ->
   probabilities`` (tests, the Slicer widget). With the loaded model, slices run on a 128 × 128 window around the
   canal (located on a few whole slices; :mod:`DuralSacSegLib.roi`; ``crop_px=None`` runs every slice whole, as the
   source method does). ``progress(fraction, message)`` and ``should_cancel()`` are called per batch; cancelling
   raises ``SpineMorphError("cancelled")``.
4. **Back to the input grid.** The probability map (a volume on the network grid with its true geometry) is resampled
   (linear) onto the input's own grid and thresholded at ``threshold`` (the model's decision threshold, 20/21 for
   the embedded models; 0.5 for an injected predictor): the mask has the input's size, spacing,
   origin and direction. For a resliced input the axial mask (the same probabilities resampled onto the axial grid) is
   kept as well.
5. **Table.** :func:`DuralSacSegLib.dsca.compute_dsca_table` on the axial mask (the input grid itself for an axial
   stack), so areas use the true pixel size of that grid.

:func:`write_outputs` writes ``dural_sac.seg.nrrd``, ``dural_sac.nii.gz``, ``dsca.csv``, ``dsca.json``
(+ ``dsca_levels.csv``, ``dural_sac_probability.nii.gz``) and overlay PNGs (smallest areas first), atomically, refusing
to overwrite without ``overwrite=True``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from DuralSacSegLib.dsca import FLAG_BRIDGED, DscaTable, compute_dsca_table, level_position_mm
from DuralSacSegLib.postprocess import parse_spec as parse_postprocess
from DuralSacSegLib.postprocess import postprocess_probabilities
from DuralSacSegLib.roi import DEFAULT_CROP_PX, RoiReport, predict_stack, validate_crop_px
from DuralSacSegLib.stenosis import StenosisScheme, get_scheme
from spinemorph.atomic import atomic_path, atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError, SpineMorphError
from spinemorph.intensity import normalize_percentile
from spinemorph.labels import COLORS, DSCA_LABELS, DURAL_SAC
from spinemorph.segio import write_seg_nrrd
from spinemorph.volume import (
    Volume,
    check_geometry,
    check_intensities,
    check_plane_resolution,
    read_volume,
    resample_like,
    resample_to_grid,
    write_volume,
)

#: side of the square network input (pixels)
NETWORK_SIZE = 320
#: slice normals within this angle (deg) of S-I are used as acquired (project choice: covers gantry tilts along the
#: lumbar lordosis; the table's angle correction handles the rest; steeper stacks are resliced)
AXIAL_TOLERANCE_DEG = 30.0
#: half-width (mm) of the field shown around the dural sac in the overlay PNGs
OVERLAY_MARGIN_MM = 25.0
#: smallest default plane spacing (mm) when a non-axial volume is resliced
DEFAULT_MIN_RESLICE_SPACING_MM = 1.0
DEFAULT_BATCH_SIZE = 8
DEFAULT_THRESHOLD = 0.5
#: None = the catalogue's default model (dsca-unet, see DuralSacSeg/Resources/Models/catalog.json)
DEFAULT_MODEL: str | None = None
DEFAULT_N_OVERLAYS = 4

#: output file names of :func:`write_outputs`
SEG_NRRD = "dural_sac.seg.nrrd"
MASK_NIFTI = "dural_sac.nii.gz"
PROB_NIFTI = "dural_sac_probability.nii.gz"
TABLE_CSV = "dsca.csv"
TABLE_JSON = "dsca.json"
LEVELS_CSV = "dsca_levels.csv"

Predictor = Callable[[np.ndarray], np.ndarray]
ProgressCallback = Callable[[float, str], None]
CancelCheck = Callable[[], bool]


@dataclasses.dataclass
class SegmentationResult:
    """Output of :func:`segment_volume`.

    Attributes
    ----------
    mask : Volume
        Dural sac mask (uint8, 0/1) on the input's own grid.
    probability : Volume or None
        Probability (float32) on the input's grid (``keep_probability=True``).
    table : DscaTable
        Per-slice table of the axial stack (the input itself, or the resliced axial grid).
    image : Volume
        The input image.
    axial_image, axial_mask : Volume
        The axial stack that was segmented and its mask (identical to ``image`` / ``mask`` for an axial input).
    resliced : bool
        True if the input was resliced to axial planes.
    tilt_deg : float
        Angle between the input's slice normal and the S-I axis.
    network_pixel_mm : float
        Pixel size (mm) of the 320 × 320 network grid (square pixels, the same for all slices).
    threshold : float
        Probability threshold used for the mask.
    model_name, device : str
        What made the prediction (``"injected predictor"`` for a callable).
    timings_s : dict
        Seconds per stage (``prepare_s``, ``model_load_s``, ``inference_s``, ``map_back_s``, ``table_s``, ``total_s``).
    roi : RoiReport or None
        Which slices ran whole and which on a canal-centred window (:mod:`DuralSacSegLib.roi`).
    """

    mask: Volume
    probability: Volume | None
    table: DscaTable
    image: Volume
    axial_image: Volume
    axial_mask: Volume
    resliced: bool
    tilt_deg: float
    network_pixel_mm: float
    model_name: str
    device: str
    threshold: float
    timings_s: dict[str, float]
    roi: RoiReport | None = None
    postprocess: str = "none"

    def info(self) -> dict:
        """JSON-ready description of how the result was made."""
        ax = self.axial_image
        return {
            "path": "2d",
            "model": self.model_name,
            "device": self.device,
            "threshold": self.threshold,
            "postprocess": self.postprocess,
            "resliced_to_axial": self.resliced,
            "input_tilt_from_SI_deg": round(self.tilt_deg, 3),
            "input_size_ijk": list(self.image.size_ijk),
            "input_spacing_mm": list(self.image.spacing_mm),
            "input_axis_codes": self.image.axis_codes(),
            "axial_size_ijk": list(ax.size_ijk),
            "axial_spacing_mm": list(ax.spacing_mm),
            "axial_origin_mm": list(ax.origin_mm),
            "axial_direction": np.asarray(ax.direction).round(6).tolist(),
            "network_grid": [NETWORK_SIZE, NETWORK_SIZE],
            "network_pixel_mm": self.network_pixel_mm,
            "inference": self.roi.to_dict() if self.roi is not None else {"crop_px": None},
            "timings_s": {k: round(v, 4) for k, v in self.timings_s.items()},
        }


# ---------------------------------------------------------------------- geometry
def tilt_from_si_deg(vol: Volume) -> float:
    """Angle (deg, 0–90) between the slice normal of ``vol`` and the S-I axis."""
    return float(np.degrees(np.arccos(min(1.0, abs(float(vol.slice_normal()[2]))))))


def is_axial(vol: Volume, tolerance_deg: float = AXIAL_TOLERANCE_DEG) -> bool:
    """True if the slices of ``vol`` are axial within ``tolerance_deg`` (gantry tilt allowed)."""
    return tilt_from_si_deg(vol) <= tolerance_deg + 1e-9


def axial_grid(vol: Volume, slice_spacing_mm: float | None = None, pixel_mm: float | None = None) -> dict:
    """Axial grid (LPS identity direction) covering the bounding box of ``vol``.

    Returns
    -------
    dict
        ``spacing_mm``, ``size_ijk``, ``origin_mm``, ``direction`` for :func:`spinemorph.volume.resample_to_grid`.
    """
    sp = np.asarray(vol.spacing_mm, dtype=float)
    if slice_spacing_mm is None:
        si_axis = int(np.argmax(np.abs(vol.direction[2, :])))
        slice_spacing_mm = max(float(sp[si_axis]), DEFAULT_MIN_RESLICE_SPACING_MM)
    if pixel_mm is None:
        pixel_mm = float(sp.min())
    if not (math.isfinite(slice_spacing_mm) and slice_spacing_mm > 0 and math.isfinite(pixel_mm) and pixel_mm > 0):
        raise InputError(f"reslice spacing must be positive, got slice {slice_spacing_mm} mm, pixel {pixel_mm} mm")
    size = np.asarray(vol.size_ijk, dtype=float)
    corners_idx = np.array([[a, b, c] for a in (-0.5, size[0] - 0.5) for b in (-0.5, size[1] - 0.5) for c in (-0.5, size[2] - 0.5)])
    corners = vol.index_to_lps(corners_idx)
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    new_sp = np.array([pixel_mm, pixel_mm, slice_spacing_mm], dtype=float)
    n = np.maximum(1, np.round((hi - lo) / new_sp)).astype(int)
    centre = (lo + hi) / 2
    origin = centre - new_sp * (n - 1) / 2
    return {"spacing_mm": tuple(new_sp), "size_ijk": tuple(int(x) for x in n), "origin_mm": tuple(origin), "direction": np.eye(3)}


def reslice_to_axial(vol: Volume, slice_spacing_mm: float | None = None, pixel_mm: float | None = None,
                     interpolator: str = "linear") -> Volume:
    """Resample ``vol`` onto :func:`axial_grid` (linear for images, ``"nearest"`` for label maps)."""
    return _resample(vol, axial_grid(vol, slice_spacing_mm, pixel_mm), interpolator)


def network_grid(axial: Volume, size: int = NETWORK_SIZE, fov_mm: float | None = None) -> dict:
    """Grid of the network input for every slice of ``axial``: square FOV of side max(ni·sx, nj·sy), ``size`` pixels.

    The grid keeps the slices (k spacing and positions) and in-plane directions of ``axial``; its centre coincides
    with the centre of each slice, so the FOV is padded symmetrically along the shorter side. ``fov_mm`` overrides
    the side (a centred square crop or pad), e.g. to match the 150-220 mm fields of view the networks were trained on.
    """
    ni, nj, nk = axial.size_ijk
    sx, sy, sz = axial.spacing_mm
    side = float(fov_mm) if fov_mm is not None else max(ni * sx, nj * sy)
    if not (math.isfinite(side) and side > 0):
        raise InputError(f"network field of view must be a positive length in mm, got {fov_mm}")
    p = side / size
    d = axial.direction
    centre0 = axial.index_to_lps(((ni - 1) / 2, (nj - 1) / 2, 0.0))
    origin = centre0 - d[:, 0] * p * (size - 1) / 2 - d[:, 1] * p * (size - 1) / 2
    return {"spacing_mm": (p, p, sz), "size_ijk": (size, size, nk), "origin_mm": tuple(origin), "direction": d.copy()}


def _anti_alias(axial: Volume, target_pixel_mm: float) -> Volume:
    """In-plane Gaussian pre-filter before shrinking to ``target_pixel_mm`` (σ = (factor − 1) / 2 pixels per axis,
    the rule of ``skimage.transform.resize(anti_aliasing=True)``, which the evaluation's ``prepare_slice`` uses)."""
    sx, sy, _ = axial.spacing_mm
    sig_i = max(0.0, (target_pixel_mm / sx - 1.0) / 2.0)
    sig_j = max(0.0, (target_pixel_mm / sy - 1.0) / 2.0)
    if sig_i == 0.0 and sig_j == 0.0:
        return axial
    return axial.with_array(ndimage.gaussian_filter(np.asarray(axial.array, np.float32), (0.0, sig_j, sig_i), mode="nearest"))


def _resample(vol: Volume, grid: dict, interpolator: str = "linear", default_value: float = 0.0) -> Volume:
    """:func:`spinemorph.volume.resample_to_grid` onto a grid dict of :func:`axial_grid` / :func:`network_grid`."""
    return resample_to_grid(vol, grid["spacing_mm"], grid["size_ijk"], grid["origin_mm"], grid["direction"], interpolator,
                            default_value)


@dataclasses.dataclass
class NetworkStack:
    """The slices the 2D network sees (step 2 of the module docstring).

    Attributes
    ----------
    axial : Volume
        The axial stack (the input itself, or resliced).
    resliced : bool
        True if the input was resliced.
    grid : dict
        The 320 × 320 network grid (see :func:`network_grid`).
    network_image : Volume
        The axial stack resampled onto ``grid``.
    coverage : ndarray of bool
        Where ``grid`` has image data.
    """

    axial: Volume
    resliced: bool
    grid: dict
    network_image: Volume
    coverage: np.ndarray

    @property
    def todo(self) -> list[int]:
        """Slices with image data."""
        return [k for k in range(self.coverage.shape[0]) if self.coverage[k].any()]

    def normalized(self) -> np.ndarray:
        """``(K, 320, 320)`` float32 slices normalised per slice (zeros where a slice has no image data)."""
        arr = self.network_image.array
        out = np.zeros(arr.shape, dtype=np.float32)
        for k in self.todo:
            out[k] = normalize_percentile(arr[k])
        return out


def network_stack(image: Volume, *, axial_tolerance_deg: float = AXIAL_TOLERANCE_DEG,
                  slice_spacing_mm: float | None = None, fov_mm: float | None = None) -> NetworkStack:
    """Axial stack of ``image`` on the network grid (steps 1 and 2 of the module docstring)."""
    src = Volume(np.asarray(image.array, dtype=np.float32), image.spacing_mm, image.origin_mm, image.direction)
    resliced = not is_axial(image, axial_tolerance_deg)
    axial = reslice_to_axial(src, slice_spacing_mm) if resliced else src
    grid = network_grid(axial, fov_mm=fov_mm)
    smoothed = _anti_alias(axial, grid["spacing_mm"][0])
    net = _resample(smoothed, grid, "linear", default_value=float("nan"))
    arr = np.asarray(net.array, dtype=np.float32)
    # where the network grid has image data (padding and, for a resliced input, planes beyond it are excluded)
    coverage = np.isfinite(arr)
    for k in range(arr.shape[0]):  # padding = the slice's minimum, as the training slices are padded (prepare_slice)
        if coverage[k].any() and not coverage[k].all():
            arr[k][~coverage[k]] = float(arr[k][coverage[k]].min())
    arr[~np.isfinite(arr)] = 0.0
    return NetworkStack(axial, resliced, grid, net.with_array(arr), coverage)


# ---------------------------------------------------------------------- predictor
def make_model_predictor(model: str | os.PathLike | None = DEFAULT_MODEL, device: str = "auto"):
    """Load a network and return ``(predict, info, device)``; ``predict(batch (N,1,H,W) float32) -> probabilities``.

    ``model``: catalogue name, weights file, or None for the catalogue's default model.

    Raises :class:`spinemorph.errors.ModelError` for missing / corrupt / unsuitable weights.
    """
    import torch

    from DuralSacSegLib.models import load_model
    from spinemorph.device import select_device

    dev = select_device(device)
    net, info = load_model(model, dev)
    net.eval()
    on_cpu = dev.type == "cpu"
    if on_cpu:  # BatchNorm folded into the convolutions + channels-last: same fp32 result, faster (docs/performance.md)
        from spinemorph.cpu_inference import optimize_for_inference

        net, _ = optimize_for_inference(net)

    def predict(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(dev)
            if dev.type == "cuda":
                with torch.autocast("cuda", dtype=torch.float16):
                    logits = net(x)
            elif on_cpu:  # one slice at a time: activations stay in cache (2x faster per slice on 2 cores)
                x = x.contiguous(memory_format=torch.channels_last)
                logits = torch.cat([net(x[i : i + 1]) for i in range(x.shape[0])])
            else:
                logits = net(x)
            return torch.sigmoid(logits.float()).cpu().numpy()

    return predict, info, str(dev)


# ---------------------------------------------------------------------- main entry
def segment_volume(
    image: Volume,
    predictor: Predictor | None = None,
    model: str | os.PathLike | None = DEFAULT_MODEL,
    device: str = "auto",
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    threshold: float | None = None,
    keep_probability: bool = False,
    axial_tolerance_deg: float = AXIAL_TOLERANCE_DEG,
    slice_spacing_mm: float | None = None,
    fov_mm: float | None = None,
    levels: Mapping[str, float | Sequence[float]] | None = None,
    scheme: str | StenosisScheme | None = None,
    stenosis_area: str = "axial",
    crop_px: int | str | None = "auto",
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    postprocess: str | None = None,
) -> SegmentationResult:
    """Segment the dural sac in every axial slice of ``image`` and measure the DSCA table.

    Parameters
    ----------
    image : Volume
        MR image (axial stack, or any 3D volume, which is resliced to axial planes).
    predictor : callable, optional
        ``predictor(batch) -> probabilities`` for a ``(N, 1, 320, 320)`` float32 batch of normalised slices; returns
        ``(N, 1, 320, 320)`` or ``(N, 320, 320)`` values in [0, 1]. If None, ``model`` is loaded on ``device``.
    model : str or path, optional
        Catalogue name or weights file (used only when ``predictor`` is None); None = the catalogue's default
        (MultiResUNet).
    device : {"auto", "cuda", "mps", "cpu"}
        Compute device for ``model``.
    batch_size : int
        Slices per forward pass.
    threshold : float, optional
        Probability threshold (default: the model's decision threshold, :func:`DuralSacSegLib.models.decision_threshold`;
        0.5 for an injected predictor).
    keep_probability : bool
        Also return the probability map on the input grid.
    axial_tolerance_deg : float
        Largest angle between slice normal and S-I for using the slices as acquired.
    slice_spacing_mm : float, optional
        Plane spacing when reslicing a non-axial input (see the module docstring).
    fov_mm : float, optional
        Side of the square network field of view centred on each slice (default: the whole slice, padded to a
        square). Outside it the mask is empty.
    levels, scheme, stenosis_area
        Passed to :func:`DuralSacSegLib.dsca.compute_dsca_table`.
    crop_px : int, None or "auto"
        Canal-centred window (pixels of the 320 × 320 grid, a multiple of 16) for :func:`DuralSacSegLib.roi.predict_stack`;
        None runs every slice whole. ``"auto"`` (default): :data:`DuralSacSegLib.roi.DEFAULT_CROP_PX` for the loaded
        model, None for an injected ``predictor`` (which is documented to receive whole 320 × 320 slices).
    progress : callable, optional
        ``progress(fraction 0..1, message)``, called before/after every batch.
    should_cancel : callable, optional
        Checked before every batch; if it returns True, ``SpineMorphError("cancelled")`` is raised.
    postprocess : str, optional
        Mask post-processing on the network-grid stack (:mod:`DuralSacSegLib.postprocess`: ``"none"``,
        ``"largest2d"``, ``"track"``, optionally ``"+fill"``). Default: the model's choice (catalogue ``decision``,
        chosen on a validation split), ``"none"`` for an injected predictor.

    Returns
    -------
    SegmentationResult
    """
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    if not isinstance(image, Volume):
        raise InputError(f"segment_volume expects a spinemorph Volume, got {type(image).__name__}")
    if image.array.ndim != 3:
        raise InputError(f"image must be 3D, got shape {image.shape}")
    check_geometry(image, "image")
    check_intensities(image, "image")
    if not is_axial(image, axial_tolerance_deg):  # resliced: its slices must be thin enough for axial pixels
        check_plane_resolution(image, (0.0, 0.0, 1.0), name="image", plane="axial")
    if int(batch_size) < 1:
        raise InputError(f"batch size must be >= 1, got {batch_size}")
    if crop_px == "auto":
        crop = DEFAULT_CROP_PX if predictor is None else None
    else:
        crop = validate_crop_px(crop_px, NETWORK_SIZE)

    def report(frac: float, msg: str) -> None:
        if progress is not None:
            progress(float(min(1.0, max(0.0, frac))), msg)

    def check_cancel() -> None:
        if should_cancel is not None and should_cancel():
            raise SpineMorphError("cancelled")

    sch = get_scheme(scheme)
    if stenosis_area not in ("axial", "corrected"):
        raise InputError(f"stenosis_area must be 'axial' or 'corrected', got {stenosis_area!r}")

    report(0.0, "loading the model")
    check_cancel()
    t0 = time.perf_counter()
    if predictor is None:
        predict, info, dev_name = make_model_predictor(model, device)
        model_name = info.name
        thr = float(info.threshold) if threshold is None else float(threshold)
    else:
        predict, model_name, dev_name = predictor, "injected predictor", "n/a"
        thr = DEFAULT_THRESHOLD if threshold is None else float(threshold)
        info = None
    post = postprocess if postprocess is not None else (getattr(info, "postprocess", "none") if info is not None else "none")
    parse_postprocess(post)
    if not 0.0 < thr < 1.0:
        raise InputError(f"threshold must be between 0 and 1, got {thr}")
    timings["model_load_s"] = time.perf_counter() - t0

    report(0.02, "preparing slices")
    check_cancel()
    t0 = time.perf_counter()
    tilt = tilt_from_si_deg(image)
    ns = network_stack(image, axial_tolerance_deg=axial_tolerance_deg, slice_spacing_mm=slice_spacing_mm, fov_mm=fov_mm)
    resliced, axial, grid, net_img, coverage = ns.resliced, ns.axial, ns.grid, ns.network_image, ns.coverage
    if levels:  # check the level positions before the long part
        n = axial.slice_normal()
        for name, pos in levels.items():
            level_position_mm(pos, n, str(name))
    timings["prepare_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    stack, todo = ns.normalized(), ns.todo
    prob, roi_report = predict_stack(
        predict, stack, thr, todo=todo, crop_px=crop, batch_size=int(batch_size),
        progress=lambda f, msg: report(0.05 + 0.85 * f, msg), check_cancel=check_cancel)
    prob *= coverage
    bridged: list[int] = []
    prob = postprocess_probabilities(prob, thr, post, bridged=bridged)
    timings["inference_s"] = time.perf_counter() - t0

    check_cancel()
    report(0.92, "mapping the segmentation back onto the input grid")
    t0 = time.perf_counter()
    prob_net = net_img.with_array(prob)
    prob_in = resample_like(prob_net, image, "linear")
    mask = image.with_array((prob_in.array >= thr).astype(np.uint8))
    if resliced:
        axial_prob = resample_like(prob_net, axial, "linear")
        axial_mask = axial.with_array((axial_prob.array >= thr).astype(np.uint8))
    else:
        axial_mask = mask
    timings["map_back_s"] = time.perf_counter() - t0

    report(0.96, "measuring the dural sac area per slice")
    t0 = time.perf_counter()
    # bridged network slices -> table slices (the network grid keeps the axial stack's slices; nearest by position)
    low_conf = _nearest_slices(net_img, axial_mask, bridged)
    table = compute_dsca_table(axial_mask, axial, levels=levels, scheme=sch, stenosis_area=stenosis_area,
                               low_confidence_slices=low_conf)
    timings["table_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - t_start
    report(1.0, "done")
    return SegmentationResult(
        mask=mask,
        probability=prob_in.with_array(prob_in.array.astype(np.float32)) if keep_probability else None,
        table=table,
        image=image,
        axial_image=axial,
        axial_mask=axial_mask,
        resliced=resliced,
        tilt_deg=tilt,
        network_pixel_mm=float(grid["spacing_mm"][0]),
        model_name=str(model_name),
        device=dev_name,
        threshold=thr,
        timings_s=timings,
        roi=roi_report,
        postprocess=str(post),
    )


def _nearest_slices(src: Volume, dst: Volume, ks) -> list[int]:
    """For slice indices ``ks`` of ``src``, the nearest slice index of ``dst`` along ``dst``'s slice normal."""
    ks = list(ks)
    if not ks:
        return []
    n = dst.direction[:, 2]
    dst_pos = dst.index_to_lps(np.stack([np.zeros(dst.shape[0]), np.zeros(dst.shape[0]), np.arange(dst.shape[0])], 1)) @ n
    src_pos = src.index_to_lps(np.stack([np.zeros(len(ks)), np.zeros(len(ks)), np.asarray(ks, float)], 1)) @ n
    return sorted({int(np.argmin(np.abs(dst_pos - s))) for s in src_pos})


def segment_file(path: str | os.PathLike, series_uid: str | None = None, **kwargs) -> SegmentationResult:
    """Read ``path`` (DICOM folder / NRRD / NIfTI / MHA) and run :func:`segment_volume` (``timings_s["read_s"]`` added)."""
    t0 = time.perf_counter()
    image = read_volume(path, series_uid)
    t_read = time.perf_counter() - t0
    result = segment_volume(image, **kwargs)
    result.timings_s = {"read_s": t_read, **result.timings_s}
    return result


#: "Recompute table" keeps a slice's ``bridged_gap`` flag while its area stays within this fraction of the flagged
#: area: the outline was not edited (reslicing a non-axial mask again moves areas by a few %); an edit beyond it is
#: the reader's outline, which is graded. Design choice.
UNEDITED_AREA_FRACTION = 0.05


def recompute_table(mask: Volume, image: Volume | None = None, *, axial_tolerance_deg: float = AXIAL_TOLERANCE_DEG,
                    slice_spacing_mm: float | None = None, previous: DscaTable | None = None,
                    **table_kwargs) -> DscaTable:
    """DSCA table of an (edited) mask: as is if its slices are axial, else after reslicing it to axial planes.

    A non-axial mask is resliced like :func:`segment_volume` does (linear interpolation of the 0/1 mask, threshold 0.5),
    so the Slicer widget's "Recompute table" gives the same slices as the original run. ``previous``: the table of
    the run (or of the last recompute) of the same image: slices it flagged ``bridged_gap`` (segmented at the lower
    bridging threshold) keep the flag, and stay ungraded, unless the reader edited them (area changed by more than
    :data:`UNEDITED_AREA_FRACTION`).
    """
    if is_axial(mask, axial_tolerance_deg):
        ax_mask, ax_img = mask, image
    else:
        fg = Volume((np.asarray(mask.array) > 0).astype(np.float32), mask.spacing_mm, mask.origin_mm, mask.direction)
        ax = reslice_to_axial(fg, slice_spacing_mm)
        ax_mask = ax.with_array((ax.array >= 0.5).astype(np.uint8))
        ax_img = reslice_to_axial(image, slice_spacing_mm) if image is not None else None
    table = compute_dsca_table(ax_mask, ax_img, **table_kwargs)
    if previous is None or len(previous.rows) != len(table.rows):
        return table
    keep = [k for k, (old, new) in enumerate(zip(previous.rows, table.rows))
            if FLAG_BRIDGED in old.qc_flags and new.area_mm2 > 0
            and abs(new.area_mm2 - old.area_mm2) <= UNEDITED_AREA_FRACTION * old.area_mm2]
    if not keep:
        return table
    return compute_dsca_table(ax_mask, ax_img, low_confidence_slices=keep, **table_kwargs)


# ---------------------------------------------------------------------- outputs
def overlay_names(n_overlays: int) -> list[str]:
    """File names of the overlay PNGs (``overlay_1.png`` = smallest area)."""
    return [f"overlay_{i + 1}.png" for i in range(max(0, int(n_overlays)))]


def expected_outputs(levels: bool = False, probability: bool = False, n_overlays: int = DEFAULT_N_OVERLAYS) -> list[str]:
    """File names :func:`write_outputs` may write (for the overwrite check before a long run)."""
    names = [SEG_NRRD, MASK_NIFTI, TABLE_CSV, TABLE_JSON]
    if levels:
        names.append(LEVELS_CSV)
    if probability:
        names.append(PROB_NIFTI)
    return names + overlay_names(n_overlays)


def _write_seg_nrrd(mask: Volume, path: Path) -> None:
    write_seg_nrrd(mask, {DURAL_SAC: (DSCA_LABELS[DURAL_SAC], COLORS["dural sac"])}, path)


def _write_overlay(result: SegmentationResult, row, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = row.slice_index
    img = np.asarray(result.axial_image.array[k], dtype=float)
    m = np.asarray(result.axial_mask.array[k]) > 0
    sx, sy, _ = result.axial_image.spacing_mm
    jj, ii = np.nonzero(m)
    half_i, half_j = int(math.ceil(OVERLAY_MARGIN_MM / sx)), int(math.ceil(OVERLAY_MARGIN_MM / sy))
    i0, i1 = max(0, ii.min() - half_i), min(m.shape[1], ii.max() + half_i + 1)
    j0, j1 = max(0, jj.min() - half_j), min(m.shape[0], jj.max() + half_j + 1)
    crop, mcrop = img[j0:j1, i0:i1], m[j0:j1, i0:i1]
    lo, hi = np.percentile(crop, [1, 99]) if crop.size else (0, 1)
    fig = Figure(figsize=(5, 5.4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    extent = (i0 * sx - sx / 2, (i1 - 1) * sx + sx / 2, (j1 - 1) * sy + sy / 2, j0 * sy - sy / 2)
    ax.imshow(crop, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, extent=extent, interpolation="nearest")
    if mcrop.any():
        xs, ys = (np.arange(i0, i1) * sx), (np.arange(j0, j1) * sy)
        ax.contour(xs, ys, mcrop.astype(float), levels=[0.5], colors=["yellow"], linewidths=1.2)
    corr = row.corrected_area_mm2
    corr_txt = f", perpendicular {corr:.1f} mm²" if math.isfinite(corr) else ""
    ax.set_title(
        f"slice {k} ({row.position_mm:.1f} mm{', ' + row.level if row.level else ''}): DSCA {row.area_mm2:.1f} mm²{corr_txt}\n"
        f"{row.stenosis or ('NOT graded (QC)' if row.area_mm2 > 0 else '-')}"
        f"{' | ' + ', '.join(row.qc_flags) if row.qc_flags else ''}",
        fontsize=9,
    )
    ax.set_xlabel("mm (image columns)")
    ax.set_ylabel("mm (image rows)")
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")


def write_outputs(result: SegmentationResult, out_dir: str | os.PathLike, overwrite: bool = False,
                  n_overlays: int = DEFAULT_N_OVERLAYS) -> dict[str, Path]:
    """Write the segmentation, table and overlays of ``result`` into ``out_dir``.

    Returns
    -------
    dict
        Kind (``seg_nrrd``, ``mask_nifti``, ``table_csv``, ``table_json``, ``levels_csv``, ``probability_nifti``,
        ``overlay_1`` ...) → path. Raises :class:`spinemorph.errors.OutputError` if a file exists and not ``overwrite``.
    """
    smallest = result.table.smallest(n_overlays)
    names = expected_outputs(bool(result.table.levels), result.probability is not None, len(smallest))
    out = prepare_output_dir(out_dir, overwrite, names)
    if overwrite:  # outputs of an earlier run that this run does not write would look like part of this result
        stale = set(expected_outputs(True, True, 0)) | {f.name for f in out.glob("overlay_*.png")}
        for name in sorted(stale - set(names)):
            (out / name).unlink(missing_ok=True)
    paths: dict[str, Path] = {}
    paths["seg_nrrd"] = out / SEG_NRRD
    _write_seg_nrrd(result.mask, paths["seg_nrrd"])
    paths["mask_nifti"] = write_volume(result.mask, out / MASK_NIFTI)
    if result.probability is not None:
        paths["probability_nifti"] = write_volume(result.probability, out / PROB_NIFTI)
    paths["table_csv"] = out / TABLE_CSV
    result.table.to_csv(paths["table_csv"])
    if result.table.levels:
        paths["levels_csv"] = out / LEVELS_CSV
        result.table.levels_to_csv(paths["levels_csv"])
    doc = {"segmentation": result.info(), **result.table.to_dict()}
    paths["table_json"] = atomic_write_text(out / TABLE_JSON, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    for i, row in enumerate(smallest):
        p = out / overlay_names(len(smallest))[i]
        _write_overlay(result, row, p)
        paths[f"overlay_{i + 1}"] = p
    return paths
