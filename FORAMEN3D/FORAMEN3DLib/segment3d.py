"""Segmentation of L4, the L4-5 disc and L5 (and, with a fine model, the dural sac) in a lumbar MR volume.

Single-pass models (the source method's full-volume layout and the coarse CPU model): :func:`segment_volume` =
:func:`FORAMEN3DLib.preprocess.preprocess_volume` (re-orient, resample to the 0.8 mm sagittal grid, crop, z-score,
pad to 128×192×192) → network (``torch.inference_mode``; CUDA with float16 autocast when available) → softmax →
argmax → :func:`postprocess_labels` (largest connected component per structure, holes filled) → inverse mapping onto
the input's own grid.

Fine models (weights whose ``meta["kind"]`` is ``"fine"``; 5 classes, 4th = dural sac): coarse-to-fine
(:func:`segment_fine`): the coarse model (``meta["locator"]``, default the catalogue's ``foramen3d-budget-cpu``)
segments the volume as above and gives the L4-5 disc centre; the fine crop (:func:`FORAMEN3DLib.fine_data.fine_crop_grid`,
144×144×160 voxels of 0.8 mm in the input's re-oriented directions, placed relative to that centre) is resampled
from the input (linear), z-scored, segmented with MONAI sliding-window inference (Gaussian blending; the windows run
in OpenVINO on a CPU, else ONNX Runtime or torch: :mod:`.fine_backends`, :func:`fine_network_labels`), post-processed and
pasted back onto the input grid (nearest neighbour; exact for 0.8 mm inputs aligned with the crop). A level check
adds a QC note (``SegmentationResult.qc``) when the crop probably sits one level low (:func:`segment_fine`).
The L4-5 disc the crop is placed on comes by default from the **level network** (``locator_mode="levels"``,
:mod:`FORAMEN3DLib.level_locator`: a 2D network that names L5, L4 and their discs on the mid-sagittal planes of the
whole field of view, on the planes through the coarse answer); when it names no L4-5 disc (a field of view without
the sacrum or the lower lumbar spine) the coarse answer stands, with a QC note. ``locator_mode="coarse"`` uses the
coarse model's answer alone; ``locator_mode="count"`` walks down the discs with the fine network from the coarse
answer to the sacrum and counts one disc up (:mod:`FORAMEN3DLib.locator`). A QC note says when the locator used
disagrees with the coarse model by a level. ``SegmentationResult.inference`` records what ran the network (OpenVINO, ONNX Runtime or torch, threads, precision).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from spinemorph.errors import SpineMorphError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.masks import largest_component  # 26-connected ("full") in 3D; also this module's public name
from spinemorph.volume import Volume

from . import models3d
from .fine_backends import inference_record, resolve_fine_backend, window_predictor
from .locator import DEFAULT_LOCATOR_MODE, LOCATOR_MODES  # noqa: F401 - re-exported (the CLI reads locator)
from .preprocess import PADDED_SHAPE, Preprocessed, preprocess_volume, unpad

ProgressCallback = Callable[[float, str], None]


@dataclasses.dataclass(frozen=True, eq=False)
class SegmentationResult:
    """Result of :func:`segment_volume`.

    Attributes
    ----------
    labels : Volume
        uint8 label map on the input's own grid: 0 background, 1 L4, 2 L4-5 disc, 3 L5 (4 dural sac with a fine
        model: :data:`spinemorph.labels.FORAMEN_CANAL_LABELS`).
    crop_labels : Volume
        The same (post-processed) labels on the 0.8 mm isotropic crop grid (128×180×180, orientation PIR; for a fine
        model its 144×144×160 fine crop).
    timings_s : dict
        Seconds spent in ``preprocess``, ``load_model``, ``inference``, ``postprocess``, ``inverse``, ``total``.
    model_name : str
    device : str
    qc : tuple of str
        Review notes of the pipeline (fine models: the level check, :func:`segment_fine`); empty when none.
    locator : str
        Fine models: where the crop centre came from, ``"level network"`` (the default ``locator_mode="levels"``,
        :mod:`FORAMEN3DLib.level_locator`), ``"coarse model"`` (the coarse locator, also the level network's
        fallback), ``"disc count"`` (``locator_mode="count"``, :mod:`FORAMEN3DLib.locator`) or ``"manual point"``
        (``l45_point``); ``""`` for single-pass models.
    l45_centre_lps : tuple or None
        Fine models: the L4-5 centre (LPS mm) the crop was placed on.
    canal_threshold : float or None
        Fine models: the dural-sac decision used (None = argmax of the classes; a number = class 4 only where its
        softmax probability is at least that, :func:`decide_fine_labels`).
    inference : dict or None
        What ran the (fine) network (:func:`inference_record`): ``backend`` (``"openvino"`` / ``"onnxruntime"`` / ``"torch"``),
        ``threads``, ``precision``, ``device``.
    locator_details : dict or None
        Fine models with ``locator_mode="count"``: the disc count's walk (:class:`FORAMEN3DLib.locator.CountResult`),
        its account and the coarse model's centre; None otherwise.
    """

    labels: Volume
    crop_labels: Volume
    timings_s: dict
    model_name: str
    device: str
    qc: tuple = ()
    locator: str = ""
    l45_centre_lps: tuple | None = None
    canal_threshold: float | None = None
    inference: dict | None = None
    locator_details: dict | None = None


# ---------------------------------------------------------------------- post-processing
def postprocess_labels(labels: np.ndarray, structures=tuple(FORAMEN_LABELS)) -> np.ndarray:
    """Keep the largest connected component of each structure and fill its holes (3D).

    Voxels dropped from a structure become background; filled holes take the structure's label (a hole never
    overwrites another structure).
    """
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, np.uint8)
    for s in structures:
        m = labels == s
        if not m.any():
            continue
        bbox = ndimage.find_objects(m.astype(np.uint8))[0]
        sub = largest_component(m[bbox])
        sub = ndimage.binary_fill_holes(sub)
        view = out[bbox]
        view[sub & (view == 0)] = s
    return out


# ---------------------------------------------------------------------- inference
@functools.lru_cache(maxsize=2)
def _cached_model(name: str, device: str, mtime: float):
    return models3d.load_model(name, device)


def get_model(model, device="auto") -> models3d.LoadedModel:
    """A :class:`~FORAMEN3DLib.models3d.LoadedModel` from a name / path (cached) or the object itself."""
    if isinstance(model, models3d.LoadedModel):
        return model
    from spinemorph.device import select_device

    dev = str(select_device(device))
    name, path, _ = models3d.resolve_model(model)
    mtime = path.stat().st_mtime if path.is_file() else 0.0
    return _cached_model(str(path) if name == path.name else name, dev, mtime)


def predict_logits(
    loaded: models3d.LoadedModel, array: np.ndarray, should_cancel: Callable[[], bool] | None = None,
    progress: ProgressCallback | None = None, span=(0.0, 1.0),
):
    """Network logits (float32 CPU tensor ``(1, 4, ...)`` on the network's output grid) for a preprocessed array.

    The input is average-pooled by ``loaded.input_downsample`` first; ``should_cancel`` is polled before every
    network block (forward pre-hooks), ``progress`` reported after each.
    """
    import torch
    import torch.nn.functional as F

    net = loaded.network
    dev = loaded.device
    blocks = [net.stem, *net.encoders, *net.decoders]
    state = {"done": 0}

    def hook(_module, _inputs):
        if should_cancel is not None and should_cancel():
            raise SpineMorphError("cancelled")
        state["done"] += 1
        if progress is not None:
            progress(span[0] + (span[1] - span[0]) * state["done"] / len(blocks), "segmenting")

    handles = [b.register_forward_pre_hook(hook) for b in blocks]
    try:
        x = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None, None].to(dev)
        use_amp = dev.type == "cuda"
        with torch.inference_mode(), torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
            if loaded.input_downsample > 1:
                x = F.avg_pool3d(x, loaded.input_downsample)
            return net(x).float().cpu()
    finally:
        for h in handles:
            h.remove()


def upsampled_argmax(logits, shape) -> np.ndarray:
    """Argmax over classes of the logits upsampled trilinearly to ``shape`` (uint8), one channel at a time
    (a running maximum: 4× less memory and about 2× faster on a CPU than ``argmax`` of the full tensor)."""
    import torch
    import torch.nn.functional as F

    shape = tuple(int(s) for s in shape)
    with torch.inference_mode():
        def chan(c):
            lc = logits[:, c : c + 1].float()
            if tuple(lc.shape[2:]) != shape:
                lc = F.interpolate(lc, size=shape, mode="trilinear", align_corners=False)
            return lc[0, 0]

        best = chan(0)
        arg = torch.zeros(shape, dtype=torch.uint8)
        for c in range(1, logits.shape[1]):
            lc = chan(c)
            better = lc > best
            best = torch.where(better, lc, best)
            arg[better] = c
        return arg.numpy()


def predict_probabilities(
    loaded: models3d.LoadedModel, array: np.ndarray, should_cancel: Callable[[], bool] | None = None,
    progress: ProgressCallback | None = None, span=(0.0, 1.0),
) -> np.ndarray:
    """Softmax probabilities ``(4, *array.shape)`` float32 (logits upsampled trilinearly to the input grid)."""
    import torch
    import torch.nn.functional as F

    logits = predict_logits(loaded, array, should_cancel, progress, span)
    with torch.inference_mode():
        if tuple(logits.shape[2:]) != tuple(array.shape):
            logits = F.interpolate(logits, size=tuple(array.shape), mode="trilinear", align_corners=False)
        return torch.softmax(logits, dim=1)[0].numpy()


def segment_preprocessed(
    prep: Preprocessed, model="default", device="auto", progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None, inverse: bool = True,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Post-processed labels on the padded grid and on the input grid, plus timings (no preprocessing).

    ``inverse=False`` skips the mapping back to the input grid (``None`` instead; the fine pipeline's locator needs
    the padded labels only)."""
    t = {}
    t0 = time.perf_counter()
    loaded = get_model(model, device)
    t["load_model"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    logits = predict_logits(loaded, prep.array, should_cancel, progress, (0.2, 0.8))
    _check_cancel(should_cancel)
    raw = upsampled_argmax(logits, prep.array.shape)
    n_classes = int(logits.shape[1])
    t["inference"] = time.perf_counter() - t0
    _check_cancel(should_cancel)
    t0 = time.perf_counter()
    labels = postprocess_labels(raw)
    t["postprocess"] = time.perf_counter() - t0
    if not inverse:
        return labels, None, t
    _report(progress, 0.9, "mapping back to the input grid")
    _check_cancel(should_cancel)
    t0 = time.perf_counter()
    if prep.crop.aligned:
        on_input = prep.labels_to_input(labels)
    else:
        onehot = np.stack([(labels == c) for c in range(n_classes)]).astype(np.float32)
        on_input = prep.probabilities_to_input(onehot)
    t["inverse"] = time.perf_counter() - t0
    return labels, on_input, t


def _check_cancel(should_cancel) -> None:
    if should_cancel is not None and should_cancel():
        raise SpineMorphError("cancelled")


def _report(progress, fraction: float, message: str) -> None:
    if progress is not None:
        progress(float(fraction), message)


def is_fine_model(loaded: models3d.LoadedModel) -> bool:
    """True for coarse-to-fine models (weights saved by :mod:`FORAMEN3DLib.train_fine`)."""
    return loaded.meta.get("kind") == "fine"


#: locator used by fine models whose weights do not name one
DEFAULT_LOCATOR = "foramen3d-budget-cpu"


def locate_l45(prep: Preprocessed, labels_padded: np.ndarray) -> np.ndarray:
    """LPS centre of the L4-5 disc found by a coarse segmentation (padded crop labels); L4 ∪ L5 centre when the
    disc is missing. Raises :class:`SpineMorphError` when neither is found."""
    crop = unpad(np.asarray(labels_padded))
    for sel in (crop == 2, (crop == 1) | (crop == 3)):
        if sel.sum() > 50:
            idx = np.argwhere(sel).mean(0)  # k, j, i
            return prep.crop.volume(crop).index_to_lps(idx[::-1])
    raise SpineMorphError("the locator found no L4-5 level in this image; give a sagittal or 3D lumbar MRI covering L3-S1")


#: Level check of the fine pipeline (a QC note, never a correction). The dural sac (thecal sac) usually ends at
#: S1-S2, at or below the lower face of a fine crop placed on the right L4-5 disc (53.6 mm below it). Measured with the
#: fine model on the real slabs of 9 training patients (docs/performance.md, "level check"): crop on the reference
#: L4-5 disc: the predicted sac ends 0-23 mm above that face in 8, 41 mm in one (162); crop one level low (on L5-S1,
#: the locator's error on held-out patient 136): 33-68 mm in all 9. A sac that ends more than this far (mm) above
#: the face (inside the image) gets the QC note; moving the crop automatically would have mislabelled 162.
SAC_END_GAP_MM = 30.0


def _device_type(device) -> str:
    import torch

    return torch.device(device).type


def fine_network_logits(loaded: models3d.LoadedModel, x: np.ndarray, roi=None, overlap: float = 0.25,
                        backend: str = "auto", precision: str = "fp32") -> np.ndarray:
    """Blended logits (float32 ``(classes, *x.shape)``) of a fine crop: MONAI sliding-window inference (Gaussian
    blending of the logits; the argmax of blended logits = argmax of the softmax that :func:`train_fine.predict_crop`
    returns).

    ``backend``: ``"auto"`` (default) = OpenVINO on a CPU where it is installed, else ONNX Runtime (fp32), else
    torch (:mod:`.fine_backends`; conversions cached on disk); ``"openvino"``, ``"onnx"`` or ``"torch"`` by name.
    ``precision="bf16"``: OpenVINO bfloat16 where the CPU has it natively, torch bfloat16 autocast (CPU) / float16
    (CUDA) on the torch path; ONNX Runtime is always fp32."""
    import torch
    from monai.inferers import sliding_window_inference

    from .train_fine import with_coordinates

    roi = tuple(int(r) for r in (roi or loaded.meta.get("infer_roi") or (96, 96, 96)))
    n_in = int(loaded.network.config.in_channels)
    inp = with_coordinates(x, x.shape) if n_in == 4 else np.asarray(x, np.float32)[None]
    xt = torch.from_numpy(np.ascontiguousarray(inp))[None].to(loaded.device)
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32 or bf16, got {precision!r}")
    backend = resolve_fine_backend(xt.device.type, backend, precision)
    if backend == "torch":
        def predictor(t):
            return loaded.network(t).float()
    else:
        sess = window_predictor(loaded, roi, backend, precision)

        def predictor(t):
            return torch.from_numpy(sess(t.cpu().numpy()))
    dev = xt.device.type
    amp = torch.bfloat16 if dev == "cpu" else torch.float16
    with torch.inference_mode(), torch.autocast(dev, dtype=amp, enabled=precision == "bf16" and backend == "torch"):
        logits = sliding_window_inference(xt, roi, 1, predictor, overlap=overlap, mode="gaussian")
        return logits[0].float().cpu().numpy()


def check_canal_threshold(value) -> float | None:
    """``None`` (argmax) or a probability in (0, 1); anything else raises :class:`SpineMorphError`."""
    if value is None:
        return None
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise SpineMorphError(f"canal_threshold must be a probability between 0 and 1 or null, got {value!r}") from None
    if not 0.0 < t < 1.0:
        raise SpineMorphError(f"canal_threshold must be a probability between 0 and 1 (exclusive), got {t:g}")
    return t


def decide_fine_labels(logits: np.ndarray, canal_threshold: float | None = None) -> np.ndarray:
    """Labels (uint8) of a fine crop's blended logits ``(classes, ...)``.

    ``canal_threshold`` None: the argmax over the classes. A number ``t``: the dural sac (class 4) only where its
    softmax probability is ≥ ``t``; a voxel whose argmax is 4 with a lower probability takes the best of the other
    classes (background, L4, disc, L5). Why a threshold: with five classes the argmax can give the sac to a voxel at
    p = 0.3 on its rim (partial volume of sac, bone and epidural fat), and the measured sac was too large by about a
    rim (``docs/dsca3d.md``); ``t`` is chosen on validation patients (``scripts/dsca3d_calibrate.py``)."""
    import torch

    from . import fine_data as fd

    lg = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
    shape = tuple(lg.shape[1:])
    with torch.inference_mode():
        # running maximum over the classes (ties: the lower class, as argmax): 10x faster than argmax(0) here
        lab = torch.from_numpy(upsampled_argmax(lg[None], shape))
        t = check_canal_threshold(canal_threshold)
        if t is not None and lg.shape[0] > fd.CANAL:
            sac = lab == fd.CANAL
            weak = torch.zeros(shape, dtype=torch.bool)
            weak[sac] = torch.softmax(lg[:, sac], 0)[fd.CANAL] < t
            if bool(weak.any()):
                rest = torch.cat([lg[: fd.CANAL], lg[fd.CANAL + 1 :]])
                others = torch.from_numpy(upsampled_argmax(rest[None], shape))
                others = torch.where(others >= fd.CANAL, others + 1, others).to(torch.uint8)
                lab = torch.where(weak, others, lab)
        return lab.numpy()


def disc_softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax probability (float32) of the L4-5 disc class of a fine crop's blended logits ``(classes, ...)``."""
    import torch

    from . import fine_data as fd

    with torch.inference_mode():
        lg = torch.from_numpy(np.ascontiguousarray(logits, dtype=np.float32))
        return torch.softmax(lg, 0)[fd.DISC].numpy().copy()


def fine_network_labels(loaded: models3d.LoadedModel, x: np.ndarray, roi=None, overlap: float = 0.25,
                        backend: str = "auto", precision: str = "fp32", canal_threshold: float | None = None) -> np.ndarray:
    """Labels (uint8, ``x.shape``) of a fine crop: :func:`fine_network_logits` → :func:`decide_fine_labels`."""
    return decide_fine_labels(fine_network_logits(loaded, x, roi, overlap, backend, precision), canal_threshold)


def sac_end_gap_mm(labels: np.ndarray, fov: np.ndarray) -> float:
    """Distance (mm) from the lowest row of the predicted dural sac to the lower face of the fine crop, or to the
    lowest imaged row when the image ends inside the crop (array ``(k, j, i)``, j superior → inferior). 0 when the
    sac reaches it; NaN when there is no sac."""
    from . import fine_data as fd

    rows = np.nonzero((labels == fd.CANAL).any(axis=(0, 2)))[0]
    if len(rows) == 0:
        return float("nan")
    imaged = np.nonzero(fov.any(axis=(0, 2)))[0]
    last = int(imaged.max()) if len(imaged) else labels.shape[1] - 1
    return max(0.0, float(last - rows.max()) * fd.FINE_SPACING_MM)


# ``locator_mode`` of segment_fine: "coarse" (the coarse model's L4-5), "count" (walk down the discs with the fine
# network from the coarse answer, FORAMEN3DLib.locator) or "levels" (the level-naming network on the whole
# mid-sagittal field of view, FORAMEN3DLib.level_locator); LOCATOR_MODES and DEFAULT_LOCATOR_MODE are defined in
# FORAMEN3DLib.locator (no torch import: the command line reads them).

#: the disc count and the coarse model disagree by a level when their L4-5 centres lie this far apart (S-I, mm; one
#: level is 30-40 mm)
LEVEL_DISAGREE_MM = 15.0


def level_shift_mm(prep: Preprocessed, a_lps, b_lps) -> float:
    """Superior-inferior distance (mm) from ``a_lps`` to ``b_lps`` along the crop's row axis (+ = b inferior)."""
    d = np.asarray(prep.crop.direction, float)
    return float((d.T @ (np.asarray(b_lps, float) - np.asarray(a_lps, float)))[1])


#: ``canal_threshold`` default of :func:`segment_fine`: the loaded model's own setting (its catalogue entry)
MODEL_SETTING = "model"


def check_l45_point(image: Volume, point_lps) -> np.ndarray:
    """A hand-placed L4-5 centre as an LPS array; :class:`InputError` (one line) when it is not three finite numbers
    or lies outside the image (more than half a voxel beyond its outer voxel centres)."""
    from spinemorph.errors import InputError

    try:
        pt = np.asarray(point_lps, dtype=float).reshape(3)
    except (TypeError, ValueError):
        raise InputError(f"the L4-5 point must be three numbers X,Y,Z (LPS mm), got {point_lps!r}") from None
    if not np.all(np.isfinite(pt)):
        raise InputError(f"the L4-5 point must be three finite numbers (LPS mm), got {point_lps!r}")
    ijk = np.asarray(image.lps_to_index(pt), float)
    size = np.asarray(image.size_ijk, float)
    if np.any(ijk < -0.5) or np.any(ijk > size - 0.5):
        corners = np.array([image.index_to_lps(np.array(c, float)) for c in
                            [(0, 0, 0), tuple(np.asarray(image.size_ijk) - 1)]])
        lo, hi = corners.min(0), corners.max(0)
        raise InputError(
            f"the L4-5 point ({pt[0]:.1f}, {pt[1]:.1f}, {pt[2]:.1f}) LPS mm lies outside the image (LPS extent "
            f"x {lo[0]:.1f}..{hi[0]:.1f}, y {lo[1]:.1f}..{hi[1]:.1f}, z {lo[2]:.1f}..{hi[2]:.1f} mm); give the point "
            "in LPS millimetres (RAS: negate x and y)")
    return pt


def fine_crop_input(image: Volume, prep: Preprocessed, centre_lps, shift_mm=(0.0, 0.0, 0.0)):
    """``(grid, x, fov)`` of the fine crop placed relative to ``centre_lps``: the crop grid (snapped onto the input
    voxels for a 0.8 mm input, so that resampling and pasting back are exact indexing), the z-scored crop image and
    the imaged-voxel mask."""
    from spinemorph.volume import resample_to_grid

    from . import fine_data as fd

    vol = image if np.issubdtype(image.array.dtype, np.floating) else image.with_array(image.array.astype(np.float32))
    grid = fd.fine_crop_grid(centre_lps, shift_mm, direction=prep.crop.direction)
    if prep.crop.aligned:
        snapped = image.index_to_lps(np.round(image.lps_to_index(np.asarray(grid.origin_mm))))
        grid = fd.FineGrid(tuple(float(v) for v in snapped), grid.direction, grid.shape)
    img = resample_to_grid(vol, grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction, "linear").array
    ones = image.with_array(np.ones(image.shape, np.uint8))
    fov = resample_to_grid(ones, grid.spacing_mm, grid.size_ijk, grid.origin_mm, grid.direction,
                           "nearest").array.astype(bool)
    return grid, fd.normalise(img, fov), fov


def paste_to_input(image: Volume, grid, labels: np.ndarray) -> np.ndarray:
    """Fine-crop labels mapped onto the input grid (nearest neighbour; 0 outside the crop)."""
    from spinemorph.volume import resample_to_grid

    from .preprocess import _input_subgrid

    out = np.zeros(image.shape, np.uint8)
    sub, (lo, hi) = _input_subgrid(image, grid)
    if sub is not None:
        res = resample_to_grid(grid.volume(labels), sub.spacing_mm, sub.size_ijk, sub.origin_mm, sub.direction, "nearest")
        out[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = res.array
    return out


def model_canal_threshold(loaded: models3d.LoadedModel) -> float | None:
    """The dural-sac decision stored with the model (catalogue entry ``"canal_threshold"``, or the weights' meta);
    None = argmax."""
    value = getattr(loaded, "settings", {}).get("canal_threshold", loaded.meta.get("canal_threshold"))
    return check_canal_threshold(value)


def _levels_centre(image: Volume, prep: Preprocessed, coarse_lps, device, qc: list) -> tuple[np.ndarray, str, dict]:
    """``locator_mode="levels"``: the level network's L4-5 (:func:`FORAMEN3DLib.level_locator.locate_levels`, on the
    planes around the coarse answer's left-right position); (centre, locator name, ``{"locator_details": ...}``). QC
    notes (appended to ``qc``) when it disagrees with the coarse model by a level, when the levels it names are out of
    order, and when it finds no L4-5 disc (the crop then stays on the coarse answer). ``coarse_lps`` None (the coarse
    model found no L4-5 in its 144 mm window, e.g. a tall field of view): the planes lie on the field of view's
    left-right centre and the level network's answer is used with a QC note; when it names none either, one
    :class:`SpineMorphError`."""
    from . import level_locator

    lr = coarse_lps if coarse_lps is not None else image.index_to_lps((np.asarray(image.size_ijk, float) - 1) / 2.0)
    res = level_locator.locate_levels(image, level_locator.get_level_model(device), lr)
    extra = {"locator_details": {**res.details(), "coarse_centre_lps": None if coarse_lps is None else
                                 [round(float(v), 3) for v in coarse_lps]}}
    if coarse_lps is None:  # the coarse model found nothing in its window: the level network alone (planes on the
        if res.centre_lps is None:  # field of view's left-right centre)
            raise SpineMorphError(f"no L4-5 level found: the coarse model found none in its 144 mm window and {res.reason}; "
                                  "give a sagittal or 3D lumbar MRI covering L3-S1, or place the L4-5 point by hand")
        qc.append("levels: the coarse model found no L4-5 in its window; the level network's L4-5 was used (planes on "
                  "the field of view's left-right centre) — check the level labels")
        if not res.order_ok:
            qc.append(f"level network: {res.reason} — check the level labels")
        return res.centre_lps, "level network", extra
    if res.centre_lps is None:
        qc.append(f"level network: {res.reason}; the crop is centred on the coarse model's L4-5 — check the level labels")
        return np.asarray(coarse_lps, float), "coarse model", extra
    if not res.order_ok:
        qc.append(f"level network: {res.reason} — check the level labels")
    shift = level_shift_mm(prep, coarse_lps, res.centre_lps)
    if abs(shift) >= LEVEL_DISAGREE_MM:
        n = max(1, round(abs(shift) / 35.0))
        qc.append(f"levels: the level network put L4-5 {abs(shift):.0f} mm {'below' if shift > 0 else 'above'} the "
                  f"coarse model's L4-5 (about {'one level' if n == 1 else f'{n} levels'}); the level network was used "
                  "— check the level labels")
    return res.centre_lps, "level network", extra


def segment_fine(
    image: Volume, prep: Preprocessed, loaded: models3d.LoadedModel, device="auto",
    progress: ProgressCallback | None = None, should_cancel: Callable[[], bool] | None = None,
    locator=None, overlap: float = 0.25, backend: str = "auto", level_check: bool = True, roi=None,
    precision: str = "fp32", l45_point=None, canal_threshold=MODEL_SETTING, locator_mode: str = DEFAULT_LOCATOR_MODE,
) -> tuple[np.ndarray, Volume, dict, tuple, dict]:
    """Coarse-to-fine segmentation (see the module docstring): labels on the input grid, fine-crop labels, timings,
    QC notes, and ``info`` (``locator``: ``"coarse model"`` or ``"manual point"``, ``l45_centre_lps``,
    ``canal_threshold``).

    ``l45_point``: a hand-placed L4-5 disc centre (LPS mm, inside the image): the crop is centred there and the
    coarse locator does not run (what a reader does when the locator takes the wrong level). ``canal_threshold``:
    the dural-sac decision (:func:`decide_fine_labels`); default: the model's own setting
    (:func:`model_canal_threshold`), ``None`` = argmax.

    ``locator_mode``: ``"levels"`` (default, :func:`_levels_centre`), ``"coarse"`` (the crop on the coarse model's
    L4-5) or ``"count"`` (walk down the discs
    with the fine network from the coarse answer until a crop finds no disc, :func:`FORAMEN3DLib.locator.count_walk`,
    then take the lowest walked disc whose crop's dural sac reaches its lower face,
    :func:`FORAMEN3DLib.locator.choose_by_sac_end`; 2-5 fine crops instead of 1; ``info["locator"] = "disc count"``, the walk in ``info["locator_details"]``; a QC
    note when the count and the coarse model lie a level apart (:data:`LEVEL_DISAGREE_MM`), and when the count
    fails: the crop then stays on the coarse answer, ``locator`` ``"coarse model"``); with ``"levels"``
    ``info["locator"] = "level network"`` and its account in ``info["locator_details"]``. A hand-placed
    ``l45_point`` wins over all.

    **Level check** (``level_check``): the coarse locator can take the L5-S1 disc for L4-5 (real slab 136: the
    fine network then labels L5 as L4 and S1 as L5) or L3-4 for L4-5; the fine network, which gets the crop
    coordinates, follows it. When the predicted dural sac ends more than :data:`SAC_END_GAP_MM` above the crop's
    lower face (inside the image), the QC notes ask to check the levels (the crop may sit one level low). The labels
    are not changed, and a crop one level high is not detected.
    """
    from . import locator as count_locator

    if locator_mode not in LOCATOR_MODES:
        raise SpineMorphError(f"locator_mode must be one of {', '.join(LOCATOR_MODES)}, got {locator_mode!r}")
    t: dict = {"fine_preprocess": 0.0, "inference": 0.0, "postprocess": 0.0}
    qc: list[str] = []
    extra: dict = {}
    thr = model_canal_threshold(loaded) if canal_threshold == MODEL_SETTING else check_canal_threshold(canal_threshold)

    def run_crop(c, disc_probability: bool = False) -> count_locator.Crop:
        _check_cancel(should_cancel)
        t0 = time.perf_counter()
        g, xx, fv = fine_crop_input(image, prep, c)
        t["fine_preprocess"] += time.perf_counter() - t0
        _check_cancel(should_cancel)
        t0 = time.perf_counter()
        pdisc = None
        if disc_probability:  # the counting locator asks for the disc probability too (same labels)
            logits = fine_network_logits(loaded, xx, roi, overlap, backend, precision)
            r = decide_fine_labels(logits, thr)
            pdisc = disc_softmax(logits)
            pdisc[~fv] = 0.0
        else:
            r = fine_network_labels(loaded, xx, roi, overlap, backend, precision, canal_threshold=thr)
        r[~fv] = 0
        t["inference"] += time.perf_counter() - t0
        _check_cancel(should_cancel)
        t0 = time.perf_counter()
        lab = postprocess_labels(r, structures=(1, 2, 3, 4))
        t["postprocess"] += time.perf_counter() - t0
        return count_locator.Crop(np.asarray(c, float), lab, g, fv, pdisc, sac_end_gap_mm=sac_end_gap_mm(lab, fv))

    t0 = time.perf_counter()
    tc: dict = {}
    crop = None
    if l45_point is not None:
        centre = check_l45_point(image, l45_point)
        where = "manual point"
    else:
        loc_name = locator or loaded.meta.get("locator") or DEFAULT_LOCATOR
        coarse_padded, _, tc = segment_preprocessed(prep, loc_name, device, None, should_cancel, inverse=False)
        try:
            centre = locate_l45(prep, coarse_padded)
        except SpineMorphError:
            if locator_mode != "levels":
                raise
            centre = None  # the level network may still name L4-5 (it sees the whole field of view)
        where = "coarse model"
        if locator_mode == "levels":
            _report(progress, 0.3, "naming the levels")
            centre, where, extra = _levels_centre(image, prep, centre, loaded.device, qc)
        if locator_mode == "count":
            _report(progress, 0.3, "counting the levels")
            counted = count_locator.choose_by_sac_end(
                count_locator.count_walk(centre, lambda c: run_crop(c, disc_probability=True)), SAC_END_GAP_MM)
            extra = {"locator_details": {"mode": "count", "walk": counted.steps(), "reason": counted.reason,
                                         "coarse_centre_lps": [round(float(v), 3) for v in centre]}}
            if counted.crop is None:
                qc.append(f"disc count failed ({counted.reason}); the crop is centred on the coarse model's L4-5 — "
                          "check the level labels")
                crop = next((c for c in counted.walk if np.allclose(c.centre_lps, centre)), None)
            else:
                crop = counted.crop
                where = "disc count"
                shift = level_shift_mm(prep, centre, crop.centre_lps)
                if abs(shift) >= LEVEL_DISAGREE_MM:
                    n = max(1, round(abs(shift) / 35.0))
                    qc.append(f"levels: the disc count put L4-5 {abs(shift):.0f} mm {'below' if shift > 0 else 'above'} "
                              f"the coarse model's L4-5 (about {'one level' if n == 1 else f'{n} levels'}); the count "
                              f"was used ({counted.reason}) — check the level labels")
                centre = crop.centre_lps
    t["locate"] = time.perf_counter() - t0 - (t["fine_preprocess"] + t["inference"] + t["postprocess"])
    _report(progress, 0.3, "fine segmentation")
    _check_cancel(should_cancel)
    if crop is None:
        crop = run_crop(centre)
    grid, fov, labels = crop.grid, crop.fov, crop.labels
    gap = sac_end_gap_mm(labels, fov)
    if level_check and np.isfinite(gap) and gap > SAC_END_GAP_MM:
        qc.append(f"level check: the dural sac ends {gap:.0f} mm above the lower face of the L4-5 crop (expected: at "
                  "or below it); the locator may have taken L5-S1 for L4-5 — check the level labels"
                  + (" (the crop is centred on the hand-placed L4-5 point)" if l45_point is not None else ""))
    _report(progress, 0.9, "mapping back to the input grid")
    t0 = time.perf_counter()
    out = paste_to_input(image, grid, labels)
    t["inverse"] = time.perf_counter() - t0
    t["locator_model"] = tc.get("inference", 0.0)
    info = {"locator": where, "l45_centre_lps": tuple(round(float(v), 3) for v in centre), "canal_threshold": thr,
            "inference": inference_record(loaded.device, resolve_fine_backend(_device_type(loaded.device), backend, precision),
                                          precision), **extra}
    return out, grid.volume(labels), t, tuple(qc), info


def segment_volume(
    image: Volume,
    model="default",
    device="auto",
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    fine_options: dict | None = None,
    l45_point=None,
) -> SegmentationResult:
    """Segment L4 (1), the L4-5 disc (2) and L5 (3) in a lumbar MR volume.

    Parameters
    ----------
    image : Volume
        Sagittal or 3D MR image (any spacing and orientation; best: 3D T2 SPACE).
    model : str, path or LoadedModel
        ``"default"``, a catalogue name, a ``.pt`` file, or an already loaded model.
    device : str
        ``"auto"`` (CUDA, MPS, CPU), ``"cuda"``, ``"mps"`` or ``"cpu"``.
    progress : callable, optional
        Called as ``progress(fraction in [0, 1], message)``.
    should_cancel : callable, optional
        Polled between steps and between network blocks; when it returns True the run stops with
        ``SpineMorphError("cancelled")``.
    fine_options : dict, optional
        Fine models only: keyword arguments of :func:`segment_fine` (``overlap``, ``roi``, ``backend``,
        ``precision``, ``level_check``, ``locator``, ``canal_threshold``, ``locator_mode``).
    l45_point : sequence of 3 floats, optional
        Fine models only: a hand-placed L4-5 disc centre in **LPS** millimetres (RAS: negate x and y). The fine crop
        is centred there instead of on the locator's answer (``result.locator == "manual point"``). A point
        outside the image, or a single-pass model, raises :class:`~spinemorph.errors.InputError`.

    Returns
    -------
    SegmentationResult
        Labels on the input's own grid (and on the 0.8 mm crop grid) and timings.
    """
    t_start = time.perf_counter()
    _check_cancel(should_cancel)
    _report(progress, 0.0, "preprocessing")
    t0 = time.perf_counter()
    prep = preprocess_volume(image)
    t_pre = time.perf_counter() - t0
    _report(progress, 0.15, "loading model")
    _check_cancel(should_cancel)
    t0 = time.perf_counter()
    loaded = get_model(model, device)
    t_load = time.perf_counter() - t0
    if is_fine_model(loaded):
        on_input, crop_vol, t, qc, info = segment_fine(image, prep, loaded, device, progress, should_cancel,
                                                       l45_point=l45_point, **(fine_options or {}))
        timings = {"preprocess": t_pre, "load_model": t_load, **t, "total": time.perf_counter() - t_start}
        _report(progress, 1.0, "done")
        return SegmentationResult(labels=image.with_array(on_input), crop_labels=crop_vol, timings_s=timings,
                                  model_name=loaded.name, device=str(loaded.device), qc=qc, **info)
    if l45_point is not None:
        from spinemorph.errors import InputError

        raise InputError(f"an L4-5 point places the crop of a coarse-to-fine model; {loaded.name} segments the whole "
                         "image in one pass (use the fine model, e.g. --model foramen3d-fine-cpu)")
    mode = (fine_options or {}).get("locator_mode", "coarse")
    if mode != "coarse":
        from spinemorph.errors import InputError

        raise InputError(f"the locator {mode!r} places the crop of a coarse-to-fine model; {loaded.name} segments the "
                         "whole image in one pass (use the fine model, e.g. --model foramen3d-fine-cpu)")
    padded, on_input, t = segment_preprocessed(prep, model, device, progress, should_cancel)
    timings = {"preprocess": t_pre, **t, "total": time.perf_counter() - t_start}
    _report(progress, 1.0, "done")
    assert padded.shape == PADDED_SHAPE
    return SegmentationResult(
        labels=image.with_array(on_input),
        crop_labels=prep.crop.volume(np.ascontiguousarray(unpad(padded))),
        timings_s=timings,
        model_name=loaded.name,
        device=str(loaded.device),
        inference=inference_record(loaded.device, "torch", "fp16 autocast" if _device_type(loaded.device) == "cuda" else "fp32"),
    )
