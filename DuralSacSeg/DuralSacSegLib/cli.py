"""The ``spinemorph dsca`` command group: ``segment`` (here), ``train`` and ``evaluate`` (``DuralSacSegLib.cli_train``).

``spinemorph dsca segment INPUT --out DIR [--model NAME|FILE] [--device auto|cuda|mps|cpu] [--series UID]
[--levels JSON] [--overwrite]`` segments the dural sac in every axial slice of INPUT and writes the mask
(``.seg.nrrd`` + NIfTI), the per-slice DSCA table (CSV/JSON) and overlay PNGs of the smallest-area slices.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time

from spinemorph.commandline import add_command_group
from spinemorph.device import DEVICE_CHOICES

log = logging.getLogger(__name__)

_SEGMENT_EPILOG = """\
outputs in DIR:
  dural_sac.seg.nrrd     segmentation for 3D Slicer (segment "dural sac"), on the input's own grid
  dural_sac.nii.gz       the same mask as a 0/1 label map
  dsca.csv, dsca.json    per-slice table: area_mm2 (axial DSCA), corrected_area_mm2 (perpendicular to the
                         canal centreline), AP/LR diameters, solidity, components, QC flags, stenosis category;
                         a slice whose mask is implausible as a dural sac (area < 20 mm², off the canal track,
                         several pieces, low solidity, touching the border) gets NO category and a
                         stenosis_note saying why; the JSON adds the geometry, timings, model, the QC settings
                         and the stenosis thresholds with citations
  dsca_levels.csv        per-level summary (with --levels)
  overlay_N.png          slices with the outline and area, smallest area first

--path chooses how DSCA is measured (default auto; the line "path: ..." says which ran and why, dsca.json records
it as segmentation.path / path_reason):
  2d  the 2D network on axial slices (a non-axial input is resliced, see below)
  3d  DSCA on planes perpendicular to the canal centreline of a 3D canal mask: the input itself when it is a
      label map with a canal (5-class labels with canal = 4, SPIDER label 100; no network), else the canal class
      of the 3D model --model-3d (needs a model with a canal class: otherwise one error line, nothing written);
      the table's rows are then planes (position_mm = arc length), overlay_N.png show the plane cross-sections
  auto 3d for a label map with a canal, or for a non-axial 3D volume (e.g. T2 SPACE, spacing <= 2 mm) when the
      3D model has a canal class; 2d otherwise (today's embedded 3D model has no canal class: auto runs 2d)

A non-axial input (e.g. sagittal 3D T2 SPACE) is resliced to axial planes (every --slice-spacing-mm, default the
input's S-I spacing but at least 1 mm); the table then refers to those planes (positions and LPS centres are listed).

--levels takes JSON text or a JSON file: {"L4-5": 12.5} (mm along the slice normal) or {"L4-5": [x, y, z]}
(an LPS point, e.g. the disc centre); the nearest slice is summarised.

examples:
  spinemorph dsca segment axial_t1/ --out results/
  spinemorph dsca segment t2_space.nii.gz --out results/ --levels '{"L4-5": [0, 10, -35]}' --device cpu
"""


def register(subparsers) -> None:
    """Add the ``dsca`` command group with its sub-commands to ``subparsers``."""
    _, sub = add_command_group(
        subparsers,
        "dsca",
        help="dural sac cross-sectional area (DuralSacSeg): segment, train, evaluate",
        description="Dural sac cross-sectional area (DSCA) per axial slice: 2D segmentation, training and evaluation.",
        dest="dsca_command",
    )
    add_segment_parser(sub)
    from DuralSacSegLib import cli_train

    cli_train.add_train_parser(sub)
    cli_train.add_evaluate_parser(sub)


def add_segment_parser(sub) -> argparse.ArgumentParser:
    """Add ``segment`` to the ``dsca`` sub-parsers."""
    from DuralSacSegLib.stenosis import SCHEMES

    s = sub.add_parser(
        "segment",
        help="segment the dural sac and write the per-slice DSCA table",
        description="Segment the dural sac in every axial slice of INPUT (DICOM folder, .nrrd, .nii/.nii.gz, .mha) and "
        "measure its cross-sectional area per slice.",
        epilog=_SEGMENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("input", metavar="INPUT", help="DICOM folder (or one file of the series) or an image file")
    s.add_argument("--out", required=True, metavar="DIR", help="output folder (created if needed)")
    s.add_argument("--model", default=None, metavar="NAME|FILE",
                   help="embedded model name or a .pt weights file (default: the catalogue's default, the real-image U-Net dsca-unet)")
    s.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default: auto)")
    s.add_argument("--series", default=None, metavar="UID", help="SeriesInstanceUID when the DICOM folder holds several")
    s.add_argument("--levels", default=None, metavar="JSON", help="level positions, JSON text or file (see below)")
    s.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    s.add_argument("--path", default="auto", choices=("auto", "2d", "3d"),
                   help="2d network on axial slices, or 3d: planes perpendicular to the canal centreline of a 3D "
                        "canal mask (default: auto, see below)")
    s.add_argument("--model-3d", default=None, metavar="NAME|FILE",
                   help="FORAMEN3D model with a canal class for the 3d path (default: the FORAMEN3D catalogue's default)")
    s.add_argument("--batch-size", type=int, default=8, metavar="N", help="slices per forward pass (default: 8)")
    s.add_argument("--slice-spacing-mm", type=float, default=None, metavar="MM",
                   help="plane spacing when a non-axial input is resliced (default: input S-I spacing, >= 1 mm)")
    s.add_argument("--fov-mm", type=float, default=None, metavar="MM",
                   help="square field of view fed to the network, centred on each slice (default: the whole slice; "
                   "the embedded models were trained on 150-220 mm)")
    s.add_argument("--overlays", type=int, default=4, metavar="N", help="overlay PNGs to write (default: 4)")
    s.add_argument("--save-probability", action="store_true", help="also write dural_sac_probability.nii.gz")
    s.add_argument("--stenosis-scheme", default="bolender1985", choices=sorted(SCHEMES),
                   help="stenosis thresholds (default: bolender1985: < 75 mm² absolute, 75-100 mm² relative)")
    s.add_argument("--stenosis-area", default="axial", choices=("axial", "corrected"),
                   help="area the stenosis categories use (default: axial)")
    s.add_argument("--postprocess", default=None, choices=("none", "fill", "largest2d", "largest2d+fill", "track", "track+fill"),
                   help="mask post-processing (default: the model's, chosen on a validation split; see the model card): "
                        "track = keep the component connected to the canal across slices, +fill = fill holes")
    s.add_argument("--crop-px", type=int, default=128, metavar="N",
                   help="run the network on an N x N window of the 320 x 320 grid around the canal, located on a few "
                        "whole slices (default: 128; 1.1 s instead of 3.4 s for 20 slices in docs/benchmark.md); 0 = every slice whole, as the source method")
    s.set_defaults(func=run_segment)
    return s


def run_segment(args: argparse.Namespace) -> int:
    """Run ``spinemorph dsca segment``; returns the exit code."""
    from tqdm import tqdm

    from DuralSacSegLib.dsca import parse_levels
    from DuralSacSegLib.segment import expected_outputs, segment_volume, write_outputs
    from spinemorph.atomic import prepare_output_dir
    from spinemorph.errors import InputError

    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.overlays < 0:
        raise InputError(f"--overlays must be >= 0, got {args.overlays}")
    for opt in ("slice_spacing_mm", "fov_mm"):
        val = getattr(args, opt)
        if val is not None and not (math.isfinite(val) and val > 0):
            raise InputError(f"--{opt.replace('_', '-')} must be a positive number, got {val}")
    from DuralSacSegLib.roi import validate_crop_px
    from DuralSacSegLib.segment import NETWORK_SIZE

    crop = None if args.crop_px == 0 else validate_crop_px(args.crop_px, NETWORK_SIZE)
    levels = parse_levels(args.levels)
    from DuralSacSegLib.segment3d_path import decide_path
    from spinemorph.volume import read_volume

    t_start = time.perf_counter()
    image = read_volume(args.input, args.series)
    read_s = time.perf_counter() - t_start
    path, reason, source = decide_path(image, getattr(args, "path", "auto"), getattr(args, "model_3d", None))
    print(f"path: {path.upper()} - {reason}")
    if path == "3d":
        return _run_segment_3d(args, image, source, reason, bool(levels))
    # refuse to overwrite before spending minutes on inference
    prepare_output_dir(args.out, args.overwrite,
                       expected_outputs(bool(levels), args.save_probability, args.overlays))

    bar = tqdm(total=100, desc="dsca segment", unit="%", leave=False, disable=None)

    def progress(fraction: float, message: str) -> None:
        bar.n = int(round(100 * fraction))
        bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    try:
        result = segment_volume(
            image,
            model=args.model,
            device=args.device,
            batch_size=args.batch_size,
            keep_probability=args.save_probability,
            slice_spacing_mm=args.slice_spacing_mm,
            fov_mm=args.fov_mm,
            levels=levels,
            scheme=args.stenosis_scheme,
            stenosis_area=args.stenosis_area,
            crop_px=crop,
            progress=progress,
            postprocess=getattr(args, "postprocess", None),
        )
        result.timings_s = {"read_s": read_s, **result.timings_s}
    finally:
        bar.close()
    base_info = result.info
    result.info = lambda: {**base_info(), "path_reason": reason}  # dsca.json: segmentation.path + path_reason
    paths = write_outputs(result, args.out, overwrite=args.overwrite, n_overlays=args.overlays)

    table = result.table
    nonempty = table.nonempty_rows()
    print(f"model {result.model_name} on {result.device}: {len(table)} slices, dural sac found on {len(nonempty)}"
          f"{' (input resliced to axial planes)' if result.resliced else ''}; {result.timings_s['total_s']:.1f} s")
    graded = table.smallest_graded(1)
    if graded:
        r = graded[0]
        corr = f", perpendicular {r.corrected_area_mm2:.1f} mm²" if math.isfinite(r.corrected_area_mm2) else ""
        print(f"smallest DSCA (of {len(table.graded_rows())} graded slices): {r.area_mm2:.1f} mm² at slice "
              f"{r.slice_index} ({r.position_mm:.1f} mm){corr} - {r.stenosis}")
    elif nonempty:
        print("warning: no slice could be graded for stenosis: every mask is implausible as a dural sac "
              "(see qc_flags / stenosis_note in dsca.csv); check the input and the segmentation", file=sys.stderr)
    else:
        print("warning: no dural sac was segmented on any slice; check the input (lumbar MRI expected)", file=sys.stderr)
    for line in table.qc_summary_lines():
        print(f"QC: {line}")
    for lv in table.levels:
        if lv.slice_index < 0:
            print(f"level {lv.level}: outside the imaged slices")
        elif not lv.stenosis:
            print(f"level {lv.level}: slice {lv.slice_index}, DSCA {lv.area_mm2:.1f} mm² - "
                  f"{lv.stenosis_note or 'no dural sac'}")
        else:
            print(f"level {lv.level}: slice {lv.slice_index}, DSCA {lv.area_mm2:.1f} mm² - {lv.stenosis}")
    print(f"wrote {len(paths)} files to {args.out}")
    return 0


def _run_segment_3d(args: argparse.Namespace, image, source, reason: str, has_levels: bool) -> int:
    """The 3d path of ``dsca segment`` (:mod:`DuralSacSegLib.segment3d_path`); same output names as the 2d path."""
    from DuralSacSegLib.segment import expected_outputs
    from DuralSacSegLib.segment3d_path import run_3d, write_outputs_3d
    from spinemorph.atomic import prepare_output_dir

    if has_levels:
        print("note: --levels is not used on the 3d path (the levels come from the vertebra / disc labels)")
    prepare_output_dir(args.out, args.overwrite, expected_outputs(True, False, args.overlays))
    result = run_3d(image, source, reason, device=args.device, scheme=args.stenosis_scheme)
    paths = write_outputs_3d(result, args.out, overwrite=args.overwrite, n_overlays=args.overlays)
    table = result.table
    nonempty = table.nonempty_rows()
    print(f"3D DSCA ({result.model_name}): {len(table)} planes perpendicular to the canal centreline "
          f"({table.span}), dural sac on {len(nonempty)}; {result.timings_s['total_s']:.1f} s")
    graded = table.smallest_graded(1)
    if graded:
        r = graded[0]
        print(f"smallest DSCA (of {len(table.graded_rows())} graded planes): {r.area_mm2:.1f} mm² at plane "
              f"{r.slice_index} ({r.position_mm:.1f} mm along the centreline{', ' + r.level if r.level else ''}) "
              f"- {r.stenosis}")
    elif nonempty:
        print("warning: no plane could be graded for stenosis (see qc_flags / stenosis_note in dsca.csv)", file=sys.stderr)
    for line in table.qc_summary_lines():
        print(f"QC: {line}")
    for note in result.segmentation_qc:  # the 3D model's notes on its segmentation (dsca.json segmentation_qc)
        print(f"QC: {note}")
    for lv in table.levels:
        if lv.slice_index < 0:
            print(f"level {lv.level}: outside the measured planes")
        else:
            print(f"level {lv.level}: plane {lv.slice_index}, DSCA {lv.area_mm2:.1f} mm² - "
                  f"{lv.stenosis or lv.stenosis_note or 'no dural sac'}")
    print(f"wrote {len(paths)} files to {args.out}")
    return 0
