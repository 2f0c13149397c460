"""Catalogue and loading of FORAMEN3D segmentation weights.

The catalogue is data: ``FORAMEN3D/Resources/Models/foramen3d_catalog.json`` (file names carry a
``foramen3d_`` prefix: Slicer installs the resources of all scripted modules into one shared folder)::

    {"default": "<name>",
     "models": [{"name": ..., "file": "<file>.pt", "sha256": ..., "size_bytes": ..., "card": "<file>.md",
                 "description": ...}]}

A weights file is a ``torch.save`` dictionary (loaded with ``weights_only=True``)::

    {"format": "spinemorph-foramen3d", "format_version": 1,
     "network": {NetworkConfig fields}, "input_downsample": 1 | 2,
     "classes": {"1": "L4", "2": "L4-5 disc", "3": "L5"},
     "state_dict": {name: float16 tensor}, "meta": {...training provenance...}}

``input_downsample`` = 2 means the network runs on the preprocessed 128×192×192 input average-pooled to
64×96×96 (1.6 mm) and its logits are upsampled trilinearly back to 0.8 mm (coarse model).

Every problem raises :class:`spinemorph.errors.ModelError` with a one-line message: unknown name, missing file,
checksum mismatch (catalogue entries), truncated / unreadable file, not a FORAMEN3D weights file, or weights that do
not fit the network they declare.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from spinemorph.atomic import atomic_path
from spinemorph.errors import ModelError
from spinemorph.files import sha256_file
from spinemorph.labels import FORAMEN_CANAL_LABELS

from .network3d import NetworkConfig, UNet3D

FORMAT = "spinemorph-foramen3d"
FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parents[1] / "Resources" / "Models"
CATALOG_PATH = MODELS_DIR / "foramen3d_catalog.json"


@dataclasses.dataclass(eq=False)
class LoadedModel:
    """A network ready for inference.

    Attributes
    ----------
    name : str
        Catalogue name, or the file name for a file path.
    network : UNet3D
        In eval mode, float32, on ``device``.
    input_downsample : int
        1 (full 0.8 mm input) or 2 (coarse 1.6 mm pass, logits upsampled).
    meta : dict
        Provenance stored with the weights (training config, seed, iterations, ...).
    path : Path
    sha256 : str
    device : torch.device
    settings : dict
        Inference settings stored in the catalogue entry (:data:`ENTRY_SETTINGS`, e.g. ``canal_threshold``: the
        dural-sac decision of a fine model, chosen on validation patients by ``scripts/dsca3d_calibrate.py``); empty
        for a weights file given by path.
    """

    name: str
    network: UNet3D
    input_downsample: int
    meta: dict
    path: Path
    sha256: str
    device: object
    settings: dict = dataclasses.field(default_factory=dict)


#: catalogue-entry fields that are inference settings of the weights (copied into :attr:`LoadedModel.settings`, kept
#: by :func:`install_model` for the same weights)
ENTRY_SETTINGS = ("canal_threshold", "canal_decision")


def read_catalog(path: str | os.PathLike | None = None) -> dict:
    """The catalogue as a dict (``default``, ``models``); an absent catalogue is an empty one."""
    p = Path(path) if path else CATALOG_PATH
    if not p.is_file():
        return {"default": None, "models": []}
    try:
        cat = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"model catalogue {p} is unreadable ({exc}); reinstall the extension") from None
    if not isinstance(cat, dict) or not isinstance(cat.get("models"), list):
        raise ModelError(f"model catalogue {p} is malformed (no 'models' list); reinstall the extension")
    return cat


def list_models(path: str | os.PathLike | None = None) -> list[dict]:
    """Catalogue entries (dicts with name, file, sha256, description, ...)."""
    return list(read_catalog(path)["models"])


def resolve_model(name_or_path: str | os.PathLike = "default", catalog: str | os.PathLike | None = None):
    """Map a catalogue name (or ``"default"``) or a file path to ``(name, path, expected_sha256 or None)``."""
    cat = read_catalog(catalog)
    base = Path(catalog).parent if catalog else MODELS_DIR
    name = str(name_or_path)
    if name == "default":
        if not cat.get("default"):
            raise ModelError(
                "no default FORAMEN3D model is installed (catalogue empty); train one with "
                "'spinemorph foramen train' and pass --model FILE"
            )
        name = cat["default"]
    for entry in cat["models"]:
        if entry.get("name") == name:
            return name, base / entry["file"], entry.get("sha256")
    p = Path(name_or_path)
    if p.suffix == ".pt" or p.exists() or os.sep in name:
        if not p.is_file():
            raise ModelError(f"model file {p} does not exist; give a catalogue name or an existing .pt file")
        return p.name, p, None
    known = ", ".join(e.get("name", "?") for e in cat["models"]) or "none installed"
    raise ModelError(f"unknown model {name!r}; known models: {known}; or give a .pt weights file")


def read_weights(path: Path) -> dict:
    import torch

    if not path.is_file():
        raise ModelError(f"model file {path} is missing; reinstall the extension or pass an existing .pt file")
    if path.stat().st_size == 0:
        raise ModelError(f"model file {path} is empty (truncated download?); reinstall it")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types (KeyError, IndexError ...) on corrupt files
        first = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"model file {path} is truncated or not a PyTorch weights file ({first}); reinstall it") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelError(f"{path} is not a FORAMEN3D weights file (expected format {FORMAT!r})")
    if int(blob.get("format_version", -1)) > FORMAT_VERSION:
        raise ModelError(f"{path} has weights format version {blob.get('format_version')}; update SpineMorph to load it")
    for key in ("network", "state_dict"):
        if key not in blob:
            raise ModelError(f"{path} is incomplete: no {key!r} entry; re-export the weights")
    return blob


def build_from_blob(blob: dict, path: Path | str = "<memory>") -> tuple[UNet3D, int]:
    """Network (float32, CPU, eval) and input downsampling described by a weights dictionary."""
    try:
        cfg = NetworkConfig.from_dict(dict(blob["network"]))
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path} declares an unusable network ({exc}); re-export the weights") from None
    down = int(blob.get("input_downsample", 1))
    if down not in (1, 2, 4):
        raise ModelError(f"{path} declares input_downsample={down}; expected 1, 2 or 4")
    net = UNet3D(cfg)
    state = {k: v.float() for k, v in blob["state_dict"].items()}
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise ModelError(f"weights in {path} do not fit the declared 3D U-Net architecture ({first})") from None
    return net.eval(), down


def load_model(name_or_path: str | os.PathLike = "default", device="cpu", catalog: str | os.PathLike | None = None) -> LoadedModel:
    """Load a catalogue model (sha256 checked) or a weights file onto ``device``.

    Parameters
    ----------
    name_or_path : str or path
        ``"default"``, a catalogue name, or a ``.pt`` file written by :func:`save_weights`.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"mps"`` or a torch device.
    catalog : path, optional
        Another catalogue (tests).

    Raises
    ------
    ModelError
        Unknown name, missing / truncated / corrupted file, checksum mismatch, wrong architecture.
    """
    import torch

    from spinemorph.device import select_device

    name, path, expected = resolve_model(name_or_path, catalog)
    digest = sha256_file(path) if path.is_file() else ""
    if expected and path.is_file() and digest != expected:
        raise ModelError(
            f"model file {path} is corrupted or was replaced (sha256 {digest[:12]}… ≠ catalogue {expected[:12]}…); reinstall it"
        )
    blob = read_weights(path)
    net, down = build_from_blob(blob, path)
    dev = device if isinstance(device, torch.device) else select_device(str(device))
    settings = {}
    if expected:  # a catalogue entry (its sha256 matched): its inference settings apply to these weights
        entry = next((e for e in read_catalog(catalog)["models"] if e.get("name") == name), {})
        settings = {k: entry[k] for k in ENTRY_SETTINGS if k in entry}
    return LoadedModel(name, net.to(dev), down, dict(blob.get("meta", {})), path, digest, dev, settings)


def save_weights(net: UNet3D, path: str | os.PathLike, input_downsample: int = 1, meta: dict | None = None) -> str:
    """Write ``net`` as fp16 weights (atomic) and return the file's sha256."""
    import torch

    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "network": net.config.to_dict(),
        "input_downsample": int(input_downsample),
        "classes": {str(k): v for k, v in list(FORAMEN_CANAL_LABELS.items())[: net.config.out_channels - 1]},
        "state_dict": {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu()) for k, v in net.state_dict().items()},
        "meta": json.loads(json.dumps(meta or {}, default=str)),
    }
    with atomic_path(path) as tmp:
        torch.save(blob, tmp)
    return sha256_file(path)


def install_model(weights: str | os.PathLike, name: str, description: str = "", card: str | None = None,
                  default: bool = False, catalog: str | os.PathLike | None = None) -> dict:
    """Copy a weights file into the models folder as ``<name>.pt`` and add / replace its catalogue entry.

    The file is loaded first (it must be a valid FORAMEN3D weights file); the entry records its sha256 and size.
    The previous entry's DSCA marker (``"dsca"``, ``"dsca_note"``: whether the canal class is validated for DSCA,
    read by ``DuralSacSegLib.segment3d_path``) and its inference settings (:data:`ENTRY_SETTINGS`, chosen for those
    weights) are kept when the weights are the same file (same sha256); new weights get ``"dsca": false`` and no
    settings until they are validated / calibrated again. Returns the catalogue entry.
    """
    src = Path(weights)
    blob = read_weights(src)
    build_from_blob(blob, src)
    cat_path = Path(catalog) if catalog else CATALOG_PATH
    cat = read_catalog(cat_path)
    file_name = name.replace("-", "_") + ".pt"
    dest = cat_path.parent / file_name
    data = src.read_bytes()
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    meta = blob.get("meta", {})
    entry = {
        "name": name,
        "file": file_name,
        "sha256": sha256_file(dest),
        "size_bytes": len(data),
        "card": card or name.replace("-", "_") + ".md",
        "description": description or f"3D U-Net {blob['network']}, input_downsample {blob.get('input_downsample', 1)}",
        "network": blob["network"],
        "input_downsample": int(blob.get("input_downsample", 1)),
        "trained": {k: meta[k] for k in ("config", "seed", "fold", "epoch", "iteration", "val_dsc_mean") if k in meta},
    }
    old = next((e for e in cat["models"] if e.get("name") == name), None)
    if old is not None and old.get("sha256") == entry["sha256"]:
        entry.update({k: old[k] for k in ENTRY_SETTINGS if k in old})
    if old is not None and "dsca" in old:
        if old.get("sha256") == entry["sha256"]:
            entry.update({k: old[k] for k in ("dsca", "dsca_note") if k in old})
        else:
            entry["dsca"] = False
            entry["dsca_note"] = (f"weights replaced (sha256 {entry['sha256'][:12]}…): canal class not yet validated "
                                  "for DSCA; set true once scripts/dsca3d_slabs.py meets per-plane MAE <= 15 mm2 on "
                                  "held-out slabs")
    cat["models"] = [e for e in cat["models"] if e.get("name") != name] + [entry]
    if default or not cat.get("default"):
        cat["default"] = name
    with atomic_path(cat_path) as tmp:
        tmp.write_text(json.dumps(cat, indent=2) + "\n")
    return entry


def update_entry(name: str, fields: dict, catalog: str | os.PathLike | None = None) -> dict:
    """Set ``fields`` in the catalogue entry ``name`` (atomic rewrite; e.g. the ``canal_threshold`` chosen by
    ``scripts/dsca3d_calibrate.py``). Raises :class:`ModelError` for a name that is not in the catalogue."""
    cat_path = Path(catalog) if catalog else CATALOG_PATH
    cat = read_catalog(cat_path)
    entry = next((e for e in cat["models"] if e.get("name") == name), None)
    if entry is None:
        raise ModelError(f"{name!r} is not a catalogue model; give a catalogue name")
    entry.update(json.loads(json.dumps(fields, default=float)))
    with atomic_path(cat_path) as tmp:
        tmp.write_text(json.dumps(cat, indent=2) + "\n")
    return entry
