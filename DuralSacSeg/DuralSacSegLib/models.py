"""Catalogue of the embedded DuralSacSeg weights, and loading / saving weights files.

The catalogue is data: ``DuralSacSeg/Resources/Models/catalog.json`` lists every embedded model with its name,
architecture, weights file, SHA-256, input size, intensity normalisation, training configuration, model card and
the metrics measured on held-out data. :func:`load_model` accepts a catalogue name or the path of a weights file
written by :func:`save_weights` (``spinemorph dsca train`` writes one per run).

Weights file format (``format_version`` 1): a ``torch.save`` dict ::

    {"format_version": 1, "architecture": "multiresunet", "state_dict": {...}, "config": {...},
     "input_size": [320, 320], "normalization": "percentile_0.5_99.5_per_slice", "threshold": None,
     "threshold_explicit": False}

``threshold``: a decision threshold chosen by whoever saved the file (``threshold_explicit`` true), or None: derived
from the training loss by :func:`decision_threshold`. Files written before ``threshold_explicit`` existed (the
embedded weights) store 0.5, which means "not chosen".

Floating-point tensors of ``state_dict`` are stored as float16 (half the size) and loaded as float32.
Files are read with ``torch.load(weights_only=True)``: no code is executed from a weights file.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from pathlib import Path

from spinemorph.atomic import atomic_write_bytes
from spinemorph.errors import ModelError, SpineMorphError
from spinemorph.files import sha256_file as sha256_of

#: folder of the embedded weights, catalogue and model cards
MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
CATALOG_PATH = MODELS_DIR / "catalog.json"
FORMAT_VERSION = 1
#: identifier of :func:`spinemorph.intensity.normalize_percentile` with its default percentiles
NORMALIZATION = "percentile_0.5_99.5_per_slice"
INPUT_SIZE = (320, 320)
DEFAULT_THRESHOLD = 0.5
_REQUIRED_KEYS = ("format_version", "architecture", "state_dict")


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What is known about a loaded model.

    Attributes
    ----------
    name : str
        Catalogue name, or the file name of a user weights file.
    architecture : str
        Key of :data:`DuralSacSegLib.networks.NETWORKS`.
    weights_path : pathlib.Path
        The weights file that was loaded.
    sha256 : str
        SHA-256 of the weights file.
    input_size : tuple of int
        (rows, columns) the slices are resized to before inference (320, 320).
    normalization : str
        Intensity normalisation identifier (:data:`NORMALIZATION`).
    threshold : float
        Probability threshold of the mask.
    config : dict
        Training configuration stored with the weights.
    card_path : pathlib.Path or None
        Model card (catalogue models).
    metrics : dict
        Metrics from the catalogue (empty for user files).
    description : str
        One-line description.
    postprocess : str
        Mask post-processing spec (:mod:`DuralSacSegLib.postprocess`): the catalogue entry's ``decision`` (chosen on a
        validation split by ``scripts/dsca_calibrate.py``) or a weights file's ``postprocess`` key; else ``"none"``.
    threshold_source : str
        Where :attr:`threshold` comes from (``"loss prior 20/21"``, ``"weights file"``, ``"catalogue decision ..."``).
    """

    name: str
    architecture: str
    weights_path: Path
    sha256: str
    input_size: tuple[int, int] = INPUT_SIZE
    normalization: str = NORMALIZATION
    threshold: float = DEFAULT_THRESHOLD
    config: dict = dataclasses.field(default_factory=dict)
    card_path: Path | None = None
    metrics: dict = dataclasses.field(default_factory=dict)
    description: str = ""
    postprocess: str = "none"
    threshold_source: str = ""


def decision_threshold(ckpt: dict) -> float:
    """Probability threshold that turns a network's output into the dural-sac mask.

    A network trained with weighted BCE (positive weight ``w``, the source method uses 20) learns
    ``q = w·p / (w·p + 1 − p)`` instead of the posterior ``p`` (the positive class is up-weighted ``w`` times), so the
    Bayes decision ``p ≥ 0.5`` is ``q ≥ w / (w + 1)`` (= 20/21 ≈ 0.952 for ``w = 20``): a prior correction derived from
    the loss, not fitted to any data. Thresholding ``q`` at 0.5 instead keeps pixels whose posterior is only
    ``1/(w+1)`` ≈ 5 %, which over-segments (the source method's precision 0.897 vs recall 0.9996 shows this bias).
    A threshold saved explicitly (``save_weights(threshold=...)``, flag ``threshold_explicit``) is used as given, 0.5
    included. Without the flag, a stored value other than 0.5 is used as given, and a stored 0.5 or None (what the
    embedded weights and ``spinemorph dsca train`` write) gets the corrected value of a weighted-BCE run.
    """
    stored = ckpt.get("threshold")
    if stored is not None and (ckpt.get("threshold_explicit") or float(stored) != DEFAULT_THRESHOLD):
        return float(stored)
    loss = (ckpt.get("config") or {}).get("loss") or {}
    if loss.get("name", "weighted_bce") == "weighted_bce" and "pos_weight" in loss:
        w = float(loss["pos_weight"])
        if w > 0:
            return w / (w + 1.0)
    return DEFAULT_THRESHOLD


# ----------------------------------------------------------------------------- catalogue
def read_catalog(path: str | os.PathLike | None = None) -> dict:
    """Read the catalogue JSON (``{"format_version", "default", "models": [...]}``); default :data:`CATALOG_PATH`."""
    path = Path(path) if path is not None else MODELS_DIR / "catalog.json"
    if not path.is_file():
        raise ModelError(f"model catalogue {path} is missing; reinstall the DuralSacSeg extension")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"model catalogue {path} is unreadable ({exc}); reinstall the DuralSacSeg extension") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        raise ModelError(f"model catalogue {path} has no 'models' list; reinstall the DuralSacSeg extension")
    return data


def catalog_entries(path: str | os.PathLike | None = None) -> dict[str, dict]:
    """Catalogue entries by name."""
    return {m["name"]: m for m in read_catalog(path)["models"]}


def default_model_name(path: str | os.PathLike | None = None) -> str:
    """Name of the default embedded model."""
    cat = read_catalog(path)
    return cat.get("default") or cat["models"][0]["name"]


def list_models(path: str | os.PathLike | None = None) -> list[str]:
    """Names of the embedded models, default first."""
    names = list(catalog_entries(path))
    default = default_model_name(path)
    return [default] + [n for n in names if n != default]


# ----------------------------------------------------------------------------- save / read weights files
def save_weights(
    path: str | os.PathLike,
    model,
    architecture: str,
    config: dict | None = None,
    half: bool = True,
    threshold: float | None = None,
) -> Path:
    """Write ``model``'s weights atomically in the SpineMorph weights format (float16 by default).

    ``threshold``: a decision threshold to store as chosen (used as given by :func:`decision_threshold`); None lets
    the loader derive it from the training loss.

    Returns the path written.
    """
    import torch

    state = {}
    for key, value in model.state_dict().items():
        t = value.detach().cpu()
        if half and t.is_floating_point():
            t = t.half()
        state[key] = t.clone()
    payload = {
        "format_version": FORMAT_VERSION,
        "architecture": architecture,
        "state_dict": state,
        "config": json.loads(json.dumps(config or {})),
        "input_size": list(INPUT_SIZE),
        "normalization": NORMALIZATION,
        "threshold": None if threshold is None else float(threshold),
        "threshold_explicit": threshold is not None,
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_weights_file(path: str | os.PathLike) -> dict:
    """Read and validate a weights file; raise :class:`ModelError` for missing, truncated or foreign files."""
    import torch

    path = Path(path)
    if not path.exists():
        raise ModelError(f"weights file {path} does not exist; give a catalogue model name or an existing .pt file")
    if not path.is_file():
        raise ModelError(f"weights path {path} is not a file")
    if path.stat().st_size == 0:
        raise ModelError(f"weights file {path} is empty (0 bytes); download or copy it again")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types (KeyError, IndexError ...) on corrupt files
        first = (str(exc).strip().splitlines() or ["unknown reason"])[0][:120]
        raise ModelError(
            f"weights file {path} is truncated or not a SpineMorph weights file ({first}); download or copy it again"
        ) from None
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in _REQUIRED_KEYS):
        raise ModelError(
            f"{path} is not a SpineMorph DSCA weights file (needs keys {', '.join(_REQUIRED_KEYS)}); "
            "use weights written by 'spinemorph dsca train'"
        )
    if int(ckpt["format_version"]) > FORMAT_VERSION:
        raise ModelError(
            f"weights file {path} has format version {ckpt['format_version']} (this SpineMorph reads up to "
            f"{FORMAT_VERSION}); update SpineMorph"
        )
    return ckpt


def _build_and_load(ckpt: dict, path: Path, device):
    import torch

    from DuralSacSegLib.networks import NETWORKS, build_network

    arch = str(ckpt["architecture"])
    if arch not in NETWORKS:
        raise ModelError(f"weights file {path} is for unknown architecture {arch!r}; choose one of {', '.join(NETWORKS)}")
    net = build_network(arch)
    state = {k: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in ckpt["state_dict"].items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        detail = detail[1].strip()[:120] if len(detail) > 1 else "tensor names or shapes differ"
        raise ModelError(
            f"weights file {path} does not fit the {arch} network ({detail}); it was written for another architecture"
        ) from None
    net.to(device)
    net.eval()
    return net


def load_model(name_or_path: str | os.PathLike | None = None, device=None, architecture: str | None = None):
    """Load an embedded model by catalogue name, or a user weights file by path.

    Parameters
    ----------
    name_or_path : str or path, optional
        Catalogue name (see :func:`list_models`; default: the catalogue's default) or a ``.pt`` weights file.
    device : torch.device or str, optional
        Device the network is moved to (default CPU).
    architecture : str, optional
        If given, the weights must be for this architecture.

    Returns
    -------
    (torch.nn.Module, ModelInfo)
        The network in ``eval()`` mode (float32) and its description.

    Raises
    ------
    ModelError
        Unknown name, missing / truncated / foreign file, SHA-256 mismatch of an embedded file, or weights that do
        not fit their (or the requested) architecture.
    """
    import torch

    device = torch.device(device or "cpu")
    entry = None
    if name_or_path is None:
        name_or_path = default_model_name()
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_file = path.suffix.lower() in (".pt", ".pth") or os.sep in text or path.exists()
    if not looks_like_file:
        entries = catalog_entries()
        if text not in entries:
            raise ModelError(f"unknown model {text!r}; choose one of {', '.join(list_models())} or give a .pt weights file")
        entry = entries[text]
        path = MODELS_DIR / entry["weights"]
        if not path.is_file():
            raise ModelError(f"embedded weights {path} of model {text!r} are missing; reinstall the DuralSacSeg extension")
        digest = sha256_of(path)
        if entry.get("sha256") and digest != entry["sha256"]:
            raise ModelError(
                f"embedded weights {path} are corrupt (SHA-256 {digest[:12]}… expected {entry['sha256'][:12]}…); "
                "reinstall the DuralSacSeg extension"
            )
    else:
        digest = sha256_of(path) if path.is_file() else ""
    ckpt = read_weights_file(path)
    arch = str(ckpt["architecture"])
    if entry is not None and entry.get("architecture") and entry["architecture"] != arch:
        raise ModelError(
            f"embedded weights {path} are for {arch}, the catalogue says {entry['architecture']}; reinstall the extension"
        )
    if architecture is not None and architecture != arch:
        raise ModelError(f"weights file {path} is for architecture {arch!r}, not the requested {architecture!r}")
    net = _build_and_load(ckpt, path, device)
    threshold = decision_threshold(ckpt)
    threshold_source = "weights file / loss prior (DuralSacSegLib.models.decision_threshold)"
    postprocess = str(ckpt.get("postprocess") or "none")
    decision = (entry or {}).get("decision") or {}
    if decision:  # chosen on a validation split of training patients (scripts/dsca_calibrate.py)
        from DuralSacSegLib.postprocess import parse_spec

        try:
            threshold = float(decision["threshold"])
            postprocess = str(decision.get("postprocess", "none"))
            parse_spec(postprocess)
        except (KeyError, TypeError, ValueError, SpineMorphError):
            raise ModelError(f"catalogue entry {text!r} has an invalid 'decision' {decision!r}; reinstall the extension") from None
        if not 0.0 < threshold < 1.0:
            raise ModelError(f"catalogue entry {text!r}: decision threshold {threshold} is not between 0 and 1")
        threshold_source = f"catalogue decision ({decision.get('chosen_on', 'validation split')})"
    info = ModelInfo(
        name=text if entry is not None else path.name,
        architecture=arch,
        weights_path=path,
        sha256=digest,
        input_size=tuple(int(s) for s in ckpt.get("input_size", INPUT_SIZE)),
        normalization=str(ckpt.get("normalization", NORMALIZATION)),
        threshold=threshold,
        config=dict(ckpt.get("config") or {}),
        card_path=(MODELS_DIR / entry["card"]) if entry is not None and entry.get("card") else None,
        metrics=dict(entry.get("metrics") or {}) if entry is not None else {},
        description=str(entry.get("description", "")) if entry is not None else f"user weights {path.name}",
        postprocess=postprocess,
        threshold_source=threshold_source,
    )
    if info.normalization != NORMALIZATION:
        raise ModelError(f"weights file {path} expects normalisation {info.normalization!r}, which SpineMorph does not provide")
    return net, info


# ----------------------------------------------------------------------------- preprocessing (training = inference)
def square_grid_geometry(shape, pixel_mm, size: tuple[int, int] = INPUT_SIZE):
    """Where a slice lands on the square network grid (field of view padded to a square, aspect ratio kept).

    The slice's field of view ``(rows·sy, cols·sx)`` is padded symmetrically to a square of side ``L`` (the larger
    extent) sampled at ``L / size`` mm, as :mod:`DuralSacSegLib.segment` does at inference.

    Returns
    -------
    (new_rows, new_cols, row0, col0, (sx, sy))
        Size of the resized slice, its offset on the grid, and its exact pixel size there.
    """
    rows, cols = int(shape[0]), int(shape[1])
    sx, sy = float(pixel_mm[0]), float(pixel_mm[1])
    side = max(rows * sy, cols * sx)
    p_r, p_c = side / size[0], side / size[1]
    new_rows = min(size[0], max(1, int(round(rows * sy / p_r))))
    new_cols = min(size[1], max(1, int(round(cols * sx / p_c))))
    return new_rows, new_cols, (size[0] - new_rows) // 2, (size[1] - new_cols) // 2, (cols * sx / new_cols, rows * sy / new_rows)


def prepare_slice(image, pixel_mm=(1.0, 1.0), size: tuple[int, int] = INPUT_SIZE):
    """Put one axial slice on the network grid and normalise its intensities (as in training).

    Parameters
    ----------
    image : numpy.ndarray
        2D slice ``[row, column]`` (any intensity scale).
    pixel_mm : (float, float)
        Pixel size ``(sx, sy)``: spacing along columns (i) and rows (j) in mm.
    size : (int, int)
        Network grid ``(rows, columns)``, 320 × 320.

    Returns
    -------
    (numpy.ndarray, (float, float))
        The float32 slice on the network grid — field of view padded to a square (aspect kept,
        :func:`square_grid_geometry`; padding = the slice minimum), resized bilinearly (anti-aliased when shrinking) —
        normalised with :func:`spinemorph.intensity.normalize_percentile`, and its pixel size ``(sx, sy)`` on that
        grid, so that an area is ``pixels × sx × sy``. A square slice of ``size`` pixels passes unchanged.
    """
    import numpy as np
    from skimage.transform import resize

    from spinemorph.intensity import normalize_percentile

    a = np.asarray(image, dtype=np.float32)
    if a.ndim != 2:
        raise ValueError(f"expected a 2D slice, got shape {a.shape}")
    new_rows, new_cols, r0, c0, pix = square_grid_geometry(a.shape, pixel_mm, size)
    if (new_rows, new_cols) != a.shape:
        shrink = new_rows < a.shape[0] or new_cols < a.shape[1]
        a = resize(a, (new_rows, new_cols), order=1, mode="edge", anti_aliasing=shrink, preserve_range=True)
    if (new_rows, new_cols) != tuple(size):
        out = np.full(size, float(a.min()), dtype=np.float32)
        out[r0 : r0 + new_rows, c0 : c0 + new_cols] = a
        a = out
    return normalize_percentile(a), pix


def resize_mask(mask, pixel_mm=(1.0, 1.0), size: tuple[int, int] = INPUT_SIZE):
    """Put a binary 2D mask on the network grid like :func:`prepare_slice` (bilinear on 0/1, threshold 0.5)."""
    import numpy as np
    from skimage.transform import resize

    m = np.asarray(mask) > 0
    new_rows, new_cols, r0, c0, _ = square_grid_geometry(m.shape, pixel_mm, size)
    if (new_rows, new_cols) != m.shape:
        r = resize(m.astype(np.float32), (new_rows, new_cols), order=1, mode="constant", anti_aliasing=False, preserve_range=True)
        m = r >= 0.5
    out = np.zeros(size, dtype=np.uint8)
    out[r0 : r0 + new_rows, c0 : c0 + new_cols] = m
    return out
