"""``spinemorph foramen``: L4-5 foraminal morphometry (``measure``), agreement statistics (``compare``) and — when
:mod:`FORAMEN3DLib.cli_seg` is installed — 3D U-Net training (``train``) and evaluation (``evaluate``).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import logging
import time
from pathlib import Path

from spinemorph import labelmaps
from spinemorph.argtypes import add_l45_point_options, l45_point_lps, positive_float
from spinemorph.atomic import atomic_write_bytes, atomic_write_text, prepare_output_dir
from spinemorph.commandline import add_command_group
from spinemorph.device import DEVICE_CHOICES
from spinemorph.errors import InputError
from spinemorph.labels import FORAMEN_LABELS
from spinemorph.volume import Volume, read_volume, write_volume

log = logging.getLogger(__name__)

MEASUREMENTS_JSON = "measurements.json"
MEASUREMENTS_CSV = "measurements.csv"
REPORT_PNG = "report.png"
LABELS_OUT = "labels.nrrd"
CSV_COLUMNS = ["Case", "Metric", "Side", "Value", "Unit", "Flag", "QC"]

_MEASURE_EPILOG = """\
input routing: an integer volume with few distinct values is a label map and is never segmented. Numbering:
  1 L4 / 2 L4-5 disc / 3 L5; SPIDER scheme A (L4 2, disc 202, L5 1) or B (L4 23, disc 223, L5 24), recognised from
  the values; any other with --label-ids L4,DISC,L5. Anything else is an MR image and is segmented first.
definitions (lateral view = the 2 mm parasagittal slab of a canal-aligned frame, searched over offsets from the
midline for the foramen closed with the least invented boundary):
  foraminal height   L4 notch (inferior aspect of the L4 pedicle, roof apex) to L5 notch (superior aspect of the L5
                     pedicle, lowest point of the floor)
  foraminal width    L4 body's posteroinferior corner to the nearest point of the anterior face of the L5 superior
                     articular process (behind the corner, facing it)
  foraminal area     region enclosed by L4 pedicle, L4 body / disc / L5 body, L5 pedicle and the facet (SAP tip to L4)
  posterior disc height  L4 posteroinferior to L5 posterosuperior body corner at the midline
QC: every value has status ok or review (fallback view or landmark, facet closing > 4 mm, thick-slice input, value
outside the plausible band height 8-30 mm, width 2-15 mm, area 30-300 mm2). A value under review never raises the flag.
flag: height <= 15 mm or width <= 8 mm -> "foramen enlargement likely needed" (height: Hasegawa et al., J Bone Joint
Surg Am 1995;77:32-38; width: threshold of the source method; both configurable).
outputs: measurements.json (values + defining LPS points + QC), measurements.csv (Case, Metric, Side, Value, Unit, Flag, QC),
report.png (lateral views), meshes/<structure>.stl + .vtp (LPS mm; --ras-meshes for RAS), labels.nrrd (only when
INPUT was an image and had to be segmented).

examples:
  spinemorph foramen measure labels.nrrd --out result/
  spinemorph foramen measure 98_t2_SPACE.mha --out result/                 (SPIDER numbering, recognised)
  spinemorph foramen measure my_labels.nii.gz --label-ids 4,45,5 --out result/
  spinemorph foramen measure t2_space.nrrd --out result/ --device cpu        (segments the image first)
"""

_COMPARE_EPILOG = """\
tables: CSV with columns Case, Metric, Side, Value (as written by `foramen measure`; concatenate the per-case
tables); rows are paired on (Case, Metric, Side). Statistics per metric: Wilcoxon signed-rank, Pearson r,
ICC(A,1) two-way random, absolute agreement, single measures (McGraw & Wong 1996; = ICC(2,1) Shrout & Fleiss 1979)
with 95 % CI, Bland-Altman bias and 95 % limits of agreement.
outputs: agreement.json, agreement.csv, pairs.csv, agreement_<metric>.png (scatter + Bland-Altman).
"""


def register(subparsers) -> None:
    """Add the ``foramen`` command group (measure, compare, and train / evaluate when available)."""
    _, sub = add_command_group(
        subparsers,
        "foramen",
        help="L4-5 foramen: morphometry, agreement statistics, 3D segmentation training/evaluation",
        description="FORAMEN3D: L4-5 intervertebral foramen morphometry from a 3D label map or MR image.",
        dest="foramen_command",
    )
    _add_measure(sub)
    _add_compare(sub)
    try:
        seg = importlib.import_module("FORAMEN3DLib.cli_seg")
    except ModuleNotFoundError as exc:
        if exc.name != "FORAMEN3DLib.cli_seg":
            raise
        seg = None
    if seg is not None:
        seg.add_segment_parser(sub)
        seg.add_train_parser(sub)
        seg.add_evaluate_parser(sub)


def _add_measure(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="measure foraminal height / width / area (left, right), posterior disc height; meshes and PNG report",
        description="Measure the L4-5 foramina of a label map (1 L4, 2 L4-5 disc, 3 L5, vertebrae with posterior "
        "elements) or of an MR image, which is segmented first with the FORAMEN3D 3D U-Net.",
        epilog=_MEASURE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT", help="label map or MR image (.nrrd, .nii/.nii.gz, .mha, DICOM folder)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--labels-only", action="store_true", help="INPUT must be a label map (refuse to segment it)")
    p.add_argument("--label-ids", metavar="L4,DISC,L5", help="label values of L4, the L4-5 disc and L5 in INPUT (default: recognised)")
    p.add_argument("--model", default="default", metavar="NAME|FILE", help="segmentation model for an image INPUT (default: default)")
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="device for segmentation (default auto)")
    add_l45_point_options(p)  # image INPUT only
    p.add_argument("--case", metavar="NAME", help="case name in the CSV (default: INPUT's file name)")
    p.add_argument("--height-threshold-mm", type=positive_float, default=15.0, help="flag height <= this (default 15)")
    p.add_argument("--width-threshold-mm", type=positive_float, default=8.0, help="flag width <= this (default 8)")
    p.add_argument("--slab-mm", type=positive_float, default=2.0, help="thickness of the lateral-view slab (union across it; default 2)")
    p.add_argument("--zone", choices=("pedicle", "entrance"), default="pedicle",
                   help="lateral view among equally closed slabs: nearest the pedicles (default) or most medial (entrance zone)")
    p.add_argument("--ras-meshes", action="store_true", help="write the meshes in RAS instead of LPS")
    p.add_argument("--no-meshes", action="store_true", help="skip the STL/VTP meshes")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run_measure)


def _add_compare(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="agreement of automatic vs manual measurements (Wilcoxon, Pearson, ICC, Bland-Altman)",
        description="Compare automatic and manual foraminal measurements: statistics per metric and plots.",
        epilog=_COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("auto", metavar="AUTO.csv", help="automatic measurements")
    p.add_argument("manual", metavar="MANUAL.csv|.json", help="manual (reference) measurements: CSV, or a JSON laid out like SPIDER foramen_manual.json")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in DIR")
    p.set_defaults(func=run_compare)


def _case_name(path: str) -> str:
    name = Path(path).name
    for suf in (".nii.gz", ".seg.nrrd", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def is_label_map(vol: Volume) -> bool:
    """True when ``vol`` is a label map: integer values, few distinct ones (:func:`spinemorph.labelmaps.is_label_map`)."""
    return labelmaps.is_label_map(vol)


def rows_to_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def run_measure(args) -> int:
    from FORAMEN3DLib.meshes import structure_meshes, write_mesh
    from FORAMEN3DLib.morphometry import Thresholds, measure_foramen
    from FORAMEN3DLib.report3d import report_png_bytes

    mesh_names = [] if args.no_meshes else [f"meshes/{n.replace(' ', '_')}{s}" for n in FORAMEN_LABELS.values() for s in (".stl", ".vtp")]
    expected = [MEASUREMENTS_JSON, MEASUREMENTS_CSV, REPORT_PNG, *mesh_names]
    out = prepare_output_dir(args.out, args.overwrite, expected + [LABELS_OUT])
    vol = read_volume(args.input)
    case = args.case or _case_name(args.input)
    seg_info = None
    label_ids = labelmaps.parse_label_ids(args.label_ids) if args.label_ids else None
    values = labelmaps.distinct_values(vol)
    scheme = None
    point = l45_point_lps(args)
    if values is not None and args.l45_point is not None:
        raise InputError(f"{args.input} is a label map: --l45-point places the crop of a segmentation; drop it")
    if values is not None:  # a label map: never segmented
        scheme = labelmaps.detect_scheme(values, label_ids)
        labels = labelmaps.to_foramen_labels(vol, scheme)
        log.debug("label map, numbering %s", scheme.describe())
    elif args.labels_only or label_ids is not None:
        raise InputError(
            f"{args.input} is not a label map (non-integer values or more than {labelmaps.MAX_LABEL_VALUES} distinct "
            "values); drop --labels-only / --label-ids to segment an MR image"
        )
    else:
        from FORAMEN3DLib.segment3d import segment_volume

        log.info("segmenting %s (model %s, device %s)", args.input, args.model, args.device)
        extra = {} if point is None else {"l45_point": point}  # only coarse-to-fine models take a point
        seg = segment_volume(vol, model=args.model, device=args.device, **extra)
        labels = seg.labels
        seg_info = {"model": str(args.model), "timings_s": {k: round(float(v), 3) for k, v in getattr(seg, "timings_s", {}).items()},
                    "locator": getattr(seg, "locator", None), "inference": getattr(seg, "inference", None),
                    "qc": list(getattr(seg, "qc", ()) or ())}
        for note in seg_info["qc"]:
            log.warning("QC: %s", note)
    thresholds = Thresholds(height_mm=args.height_threshold_mm, width_mm=args.width_threshold_mm)
    t0 = time.perf_counter()
    try:
        result = measure_foramen(labels, thresholds=thresholds, slab_half_width_mm=args.slab_mm / 2, zone=args.zone)
    except InputError as exc:
        if seg_info is None:
            raise
        # nothing is written (a failed measurement leaves no files); say where the problem is and what to do
        notes = "; ".join(seg_info["qc"])
        raise InputError(
            f"{exc} — on the automatic segmentation of {args.input} (locator: {seg_info['locator'] or 'none'}"
            + (f"; QC: {notes}" if notes else "") + "). A level off or a missed posterior arch looks like this: "
            f"look at the labels (spinemorph foramen segment {args.input} --out DIR), then place the L4-5 disc centre "
            "with --l45-point X,Y,Z or measure the corrected label map (spinemorph foramen measure LABELS --out DIR)"
        ) from exc
    t_measure = time.perf_counter() - t0
    meshes = {}
    t_mesh = 0.0
    if not args.no_meshes:
        t0 = time.perf_counter()
        meshes = structure_meshes(labels)
        t_mesh = time.perf_counter() - t0
    # the report is drawn in memory too: a drawing failure must not leave labels / meshes / measurements behind
    report_png = report_png_bytes(result, title=f"{case}: L4-5 foraminal morphometry")
    # everything is computed: only now write files (a failure above leaves no partial output)
    if seg_info:
        write_volume(labels, out / LABELS_OUT)
    for name, info in meshes.items():
        for suffix in (".stl", ".vtp"):
            write_mesh(info.polydata, out / "meshes" / f"{name.replace(' ', '_')}{suffix}", "RAS" if args.ras_meshes else "LPS")
    doc = {
        "case": case,
        "input": str(args.input),
        **result.to_dict(),
        "meshes": {k: {**v.summary(), "coordinates": "RAS" if args.ras_meshes else "LPS"} for k, v in meshes.items()},
        "timings_s": {"measure": round(t_measure, 3), "meshes": round(t_mesh, 3)},
    }
    if seg_info:
        doc["segmentation"] = seg_info
    if scheme is not None:
        doc["label_map"] = {"numbering": scheme.name, "L4": scheme.l4, "L4-5 disc": scheme.disc, "L5": scheme.l5}
    atomic_write_text(out / MEASUREMENTS_JSON, json.dumps(doc, indent=2))
    atomic_write_text(out / MEASUREMENTS_CSV, rows_to_csv(result.to_rows(case)))
    atomic_write_bytes(out / REPORT_PNG, report_png)
    if scheme is not None:
        print(f"label map ({scheme.describe()}): measured as labels, not segmented")
    for side in ("left", "right"):
        r = result.sides[side]
        if not r.measured:
            print(f"{side:>5}: NOT MEASURED — {r.qc_reasons[0]}")
            if seg_info is not None:
                print(f"       on the automatic segmentation: look at {out / LABELS_OUT}, correct it and measure the label map")
            continue
        print(
            f"{side:>5}: height {r.height.value:5.1f} mm  width {r.width.value:5.1f} mm  area {r.area.value:6.1f} mm²"
            f"  QC {r.qc_status} ({r.view_kind}, offset {r.offset_mm:.1f} mm, closing {r.closing_radius_mm:g} mm)"
            + (f"  -> {r.height.flag or r.width.flag}" if r.flagged else "")
        )
        for why in r.qc_reasons:
            print(f"       review: {why}")
    print(f"posterior disc height {result.posterior_disc_height.value:.1f} mm")
    print(f"measurement {t_measure:.2f} s, meshes {t_mesh:.2f} s; outputs in {out}")
    return 0


def run_compare(args) -> int:
    from FORAMEN3DLib.agreement import compare_tables, skipped_metrics, write_agreement_report

    names = ["agreement.json", "agreement.csv", "pairs.csv"]
    prepare_output_dir(args.out, args.overwrite, names)
    results, pairs = compare_tables(args.auto, args.manual)
    existing = [f"agreement_{m}.png" for m in results if (Path(args.out) / f"agreement_{m}.png").exists()]
    if existing and not args.overwrite:
        prepare_output_dir(args.out, False, existing)
    write_agreement_report(results, pairs, args.out, sources={"auto": str(args.auto), "manual": str(args.manual)})
    for m, st in results.items():
        print(
            f"{m}: n={st.n} mean |diff| {st.mae:.2f} {st.unit} ({st.mean_abs_pct:.1f} %), bias {st.bias:+.2f} {st.unit} "
            f"(LoA {st.loa_low:+.2f}..{st.loa_high:+.2f}), r={st.pearson_r:.3f}, "
            f"ICC(A,1)={st.icc_a1:.3f}, Wilcoxon p={st.wilcoxon_p:.3g}"
        )
    for m, why in skipped_metrics(results, pairs).items():
        print(f"{m}: skipped ({why})")
    print(f"outputs in {args.out}")
    return 0
