"""``spinemorph plan``: transforaminal L4-5 endoscopic trajectory planning.

Reads an MR image (for the skin) and an L4 / L4-5 disc / L5 label map (``--labels``; if absent the image is
segmented with ``FORAMEN3DLib.segment3d.segment_volume``), sweeps medial × craniocaudal angles per side, and writes
the report (JSON + Markdown), the sweep table (CSV), heat maps (PNG), channel meshes (STL + VTP per side), entry /
target points (JSON and a 3D Slicer ``.mrk.json``). See ``docs/planning.md``.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError
from spinemorph.volume import read_volume, write_volume

log = logging.getLogger(__name__)

#: output file names (per-side meshes are added for each planned side)
REPORT_JSON = "plan_report.json"
REPORT_MD = "plan_report.md"
SWEEP_CSV = "plan_sweep.csv"
HEATMAP_PNG = "plan_heatmap.png"
POINTS_JSON = "plan_points.json"
MARKUPS_JSON = "plan_trajectories.mrk.json"
LABELS_OUT = "plan_labels.nrrd"

#: paths looked for inside a study folder written by ``spinemorph phantom`` (spinemorph.acquisition), first match wins
STUDY_IMAGE_NAMES = ("sagittal_t2_space.nrrd", "sagittal_t2_space.nii.gz", "dicom/sagittal_t2_space")
STUDY_LABEL_NAMES = ("sagittal_t2_space_foramen.seg.nrrd", "sagittal_t2_space_foramen.nii.gz")
#: further images of the study used for the skin (the axial stack reaches further laterally than the sagittal slab)
STUDY_SKIN_NAMES = ("axial_t1.nrrd", "axial_t1.nii.gz", "dicom/axial_t1")
#: segment names (lower case) of .seg.nrrd label maps -> foramen labels
_SEGMENT_NAMES = {"l4": 1, "l4-5 disc": 2, "l4-l5 disc": 2, "l45 disc": 2, "disc": 2, "l5": 3}

_EPILOG = """\
examples:
  spinemorph plan study/ --out plan/     (study folder from `spinemorph phantom`: sagittal_t2_space image,
                                         sagittal_t2_space_foramen.seg.nrrd labels, axial_t1 for the skin)
  spinemorph plan t2_space.nrrd --labels labels.nrrd --out plan/ --side left --diameter-mm 7
  spinemorph plan t2_space.nrrd --out plan/ --target foramen-centre   (segments the image first)

angles: medial angle in the axial plane from the mid-sagittal plane (0 = straight posterior, 90 = lateral);
craniocaudal angle from the axial plane, positive = entry cranial to the target (instrument directed caudally).
best channel: bone-free (L4+L5 volume in the channel <= tolerance) with the largest clearance; if none is
bone-free, the one with the least bone, and the report states that foraminoplasty is needed.
outputs: plan_report.json/.md, plan_sweep.csv, plan_heatmap.png, channel_<side>.stl/.vtp, plan_points.json,
plan_trajectories.mrk.json (and plan_labels.nrrd when the image was segmented).
"""


def _angle_range(text: str) -> tuple:
    """Parse ``START:STOP:STEP`` (inclusive) or a comma list into a tuple of floats."""
    try:
        if ":" in text:
            a, b, s = (float(x) for x in text.split(":"))
            if s <= 0 or b < a:
                raise ValueError
            return tuple(float(v) for v in np.arange(a, b + s / 1000.0, s))
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad angle list {text!r}; use START:STOP:STEP (e.g. 20:90:5) or a comma list") from None


def register(subparsers) -> None:
    """Add the ``plan`` command."""
    p = subparsers.add_parser(
        "plan",
        help="plan transforaminal L4-5 endoscopic trajectories (angle sweep, best channel, foraminoplasty need)",
        description="Plan a transforaminal endoscopic working channel to the L4-5 disc or foramen on each side: skin "
        "entry from the image, midline and target from the L4 / disc / L5 labels, a medial x craniocaudal angle sweep, "
        "bone intersection and clearance of the channel cylinder.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="MR image (DICOM folder, .nrrd, .nii/.nii.gz, .mha) or a study folder written by `spinemorph phantom`")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--labels", metavar="LABELMAP", help="label map 1 L4, 2 L4-5 disc, 3 L5 (default: the study's, else segment INPUT)")
    p.add_argument("--side", choices=("left", "right", "both"), default="both", help="patient side of the entry (default both)")
    p.add_argument("--diameter-mm", type=float, default=7.5, help="working-channel outer diameter, 6-8 mm (default 7.5)")
    p.add_argument("--target", choices=("disc-posterior-third", "foramen-centre"), default="disc-posterior-third", help="target (default disc-posterior-third)")
    p.add_argument("--medial-angles", type=_angle_range, default=None, metavar="A:B:S", help="medial angles swept, degrees from the sagittal plane (default 20:90:5)")
    p.add_argument("--craniocaudal-angles", type=_angle_range, default=None, metavar="A:B:S", help="craniocaudal angles swept, degrees; write negative starts as --craniocaudal-angles=-30:40:5 (default -30:40:5)")
    p.add_argument("--bone-scope", choices=("channel", "approach"), default="channel", help="bone that decides 'bone-free': the whole channel to the target (default) or only the approach up to the disc surface (endplate contact inside the disc reported apart)")
    p.add_argument("--bone-tolerance-mm3", type=float, default=0.5, help="bone volume still called bone-free (default 0.5 mm3)")
    p.add_argument("--skin-image", metavar="IMAGE", action="append", default=None, help="another image of the same session (same patient position) whose field of view reaches further out to the skin, e.g. an axial stack; repeatable; each ray takes the first image that shows its skin crossing (INPUT first). A phantom study's axial_t1 is used automatically")
    p.add_argument("--body-threshold", type=float, default=None, help="image intensity separating air from the body (default Otsu)")
    p.add_argument("--model", default="default", help="segmentation model when no labels are given (default: default)")
    p.add_argument("--device", default="auto", help="device for segmentation: auto, cuda, mps, cpu (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.set_defaults(func=run)


def _resolve_inputs(input_path: Path, labels_arg: str | None) -> tuple[Path, Path | None, list[Path]]:
    """(image, labels or None, extra skin images) for INPUT: an image, a DICOM folder or a phantom study folder."""
    if not input_path.exists():
        raise InputError(f"input {input_path} does not exist")
    labels = Path(labels_arg) if labels_arg else None
    if labels is not None and not labels.exists():
        raise InputError(f"--labels {labels} does not exist")
    if input_path.is_dir():
        img = next((input_path / n for n in STUDY_IMAGE_NAMES if (input_path / n).exists()), None)
        if img is not None:
            if labels is None:
                labels = next((input_path / n for n in STUDY_LABEL_NAMES if (input_path / n).exists()), None)
            skin = next((input_path / n for n in STUDY_SKIN_NAMES if (input_path / n).exists()), None)
            return img, labels, [skin] if skin is not None else []
    return input_path, labels, []


def read_labels(path: Path):
    """Read a label map (.seg.nrrd by segment names L4 / L4-5 disc / L5, or any image file) as a Volume.

    A ``.seg.nrrd`` is mapped by segment *name* only (its stored values may be renumbered, see
    :func:`spinemorph.segio.read_seg_nrrd`), so every segment must have a known name; otherwise L4, disc and L5
    could be silently swapped.

    Raises
    ------
    InputError
        A ``.seg.nrrd`` without segments or with segments whose names are not L4 / L4-5 disc / L5; an image
        with non-integer values.
    """
    if path.name.lower().endswith(".seg.nrrd"):
        from spinemorph.segio import read_seg_nrrd

        vol, segments = read_seg_nrrd(path)
        accepted = ", ".join(repr(n) for n in _SEGMENT_NAMES)
        if not segments:
            raise InputError(f"segmentation {path} has no named segments; name them L4, L4-5 disc and L5 "
                             f"(accepted names: {accepted})")
        mapping = {v: _SEGMENT_NAMES.get(name.strip().lower()) for v, (name, _c) in segments.items()}
        unmapped = [segments[v][0] for v, m in mapping.items() if m is None]
        if unmapped:
            raise InputError(f"segmentation {path} has segment(s) {', '.join(repr(n) for n in unmapped)} that are not "
                             f"L4 / L4-5 disc / L5; rename or remove them (accepted names, any case: {accepted})")
        a = np.zeros(vol.array.shape, np.uint8)
        for v, m in mapping.items():
            a[vol.array == v] = m
        return vol.with_array(a)
    vol = read_volume(path)
    a = np.asarray(vol.array)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise InputError(f"{path} is not a label map (non-integer values); pass the 1 L4 / 2 disc / 3 L5 labels")
        vol = vol.with_array(a.astype(np.int16))
    return vol


def run(args) -> int:
    from FORAMEN3DLib import planning
    from FORAMEN3DLib.skin import body_mask

    sides = ("left", "right") if args.side == "both" else (args.side,)
    kw = {"diameter_mm": args.diameter_mm, "target": args.target, "bone_tolerance_mm3": args.bone_tolerance_mm3, "bone_scope": args.bone_scope}
    if args.medial_angles is not None:
        kw["medial_angles_deg"] = args.medial_angles
    if args.craniocaudal_angles is not None:
        kw["craniocaudal_angles_deg"] = args.craniocaudal_angles
    if not np.isfinite(args.bone_tolerance_mm3) or args.bone_tolerance_mm3 < 0:
        raise InputError("--bone-tolerance-mm3 must be a non-negative number")
    cfg = planning.PlanningConfig(**kw)  # validates diameter, angles

    image_path, labels_path, study_skin = _resolve_inputs(Path(args.input), args.labels)
    expected = [REPORT_JSON, REPORT_MD, SWEEP_CSV, HEATMAP_PNG, POINTS_JSON, MARKUPS_JSON]
    expected += [f"channel_{s}.{ext}" for s in sides for ext in ("stl", "vtp")]
    if labels_path is None:
        expected.append(LABELS_OUT)
    out = prepare_output_dir(args.out, args.overwrite, expected)

    t0 = time.perf_counter()
    image = read_volume(image_path)
    if image.array.ndim != 3 or min(image.array.shape) < 2:
        raise InputError(f"{image_path} is not a 3D volume (shape {image.array.shape}); planning needs a 3D image")
    segmented = False
    if labels_path is not None:
        labels = read_labels(labels_path)
    else:
        from FORAMEN3DLib.segment3d import segment_volume

        log.info("no label map given: segmenting %s", image_path)
        labels = segment_volume(image, model=args.model, device=args.device).labels
        segmented = True
    skin_paths = [Path(p) for p in (args.skin_image or [])] or study_skin
    for p in skin_paths:
        if not p.exists():
            raise InputError(f"--skin-image {p} does not exist")
    bodies = [body_mask(v, threshold=args.body_threshold) for v in [image] + [read_volume(p) for p in skin_paths]]
    result = planning.plan(labels, body=bodies, sides=sides, config=cfg)
    t_plan = time.perf_counter() - t0

    inputs = {"image": str(image_path), "skin_images": [str(image_path)] + [str(p) for p in skin_paths], "labels": str(labels_path) if labels_path else "segmented (FORAMEN3DLib.segment3d)", "runtime_s": round(t_plan, 2)}
    report = planning.report_dict(result, inputs)
    atomic_write_text(out / REPORT_JSON, planning.dumps(report))
    atomic_write_text(out / REPORT_MD, planning.report_markdown(report))
    planning.write_sweep_csv(result, out / SWEEP_CSV)
    planning.write_heatmap_png(result, out / HEATMAP_PNG)
    for side, sw in result.sides.items():
        pts, tris = planning.channel_mesh(sw.best.entry_lps, sw.best.target_lps, cfg.diameter_mm)
        planning.write_mesh(pts, tris, out / f"channel_{side}.stl")
        planning.write_mesh(pts, tris, out / f"channel_{side}.vtp")
    atomic_write_text(out / POINTS_JSON, planning.dumps(planning.points_dict(result)))
    atomic_write_text(out / MARKUPS_JSON, planning.dumps(planning.markups_json(result)))
    if segmented:
        write_volume(labels, out / LABELS_OUT)
    for w in result.warnings:
        log.warning("warning: %s", w)
    for side, s in report["sides"].items():
        log.info("%s: %s", side, s["verdict"])
    log.info("wrote %s (%.1f s)", out, t_plan)
    return 0
