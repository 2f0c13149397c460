"""``spinemorph phantom``: simulate the procedural lumbar phantom study (images, label maps, exact truth)."""

from __future__ import annotations

import argparse
import dataclasses
import logging

from spinemorph.errors import InputError

log = logging.getLogger(__name__)

DESCRIPTION = """\
Simulate the procedural L4-L5 lumbar phantom with exact ground truth and write:
  dicom/axial_t1/IM*.dcm            axial T1 stack (0.6875 mm pixels, 320x320, 4 mm slices, L4-L5)
  dicom/sagittal_t2_space/IM*.dcm   sagittal 3D T2 SPACE (0.8 mm isotropic, 320x320, 64 slices)
  <series>.nrrd / .nii.gz           the same images            (--format nrrd / nifti)
  <series>_<kind>.seg.nrrd          Slicer segmentations: foramen (L4, L4-5 disc, L5), dural sac, tissues
  <series>_<kind>.nii.gz            the label maps as NIfTI
  truth.json, axial_t1_slices.csv   exact foraminal height/width/area (+ 3D points), dural sac areas per slice
Same --seed, same files (byte-identical). Presets: normal, central-stenosis, foraminal-stenosis.

examples:
  spinemorph phantom --out phantom_study
  spinemorph phantom --out stenosis --preset foraminal-stenosis --seed 2 --format dicom
  spinemorph phantom --out tilted --param tilt_deg=25 --param disc_bulge_mm=3
"""


def parse_param_list(items: list[str]) -> dict:
    """Parse ``NAME=VALUE`` items into PhantomParams field values (raises :class:`InputError`)."""
    from spinemorph.phantom import PhantomParams

    fields = {f.name for f in dataclasses.fields(PhantomParams)}
    out = {}
    for item in items or []:
        if "=" not in item:
            raise InputError(f"--param {item!r} must look like NAME=VALUE (e.g. disc_height_mm=6)")
        name, value = (s.strip() for s in item.split("=", 1))
        if name not in fields:
            raise InputError(f"unknown phantom parameter {name!r}; known: {', '.join(sorted(fields))}")
        try:
            if name == "origin_lps_mm":
                vals = tuple(float(v) for v in value.replace(";", ",").split(","))
                if len(vals) != 3:
                    raise ValueError
                out[name] = vals
            else:
                out[name] = float(value)
        except ValueError:
            raise InputError(f"--param {name}={value!r} is not a number" + (" triple x,y,z" if name == "origin_lps_mm" else "")) from None
    return out


def run(args: argparse.Namespace) -> int:
    from spinemorph.acquisition import make_study, parse_formats
    from spinemorph.phantom import preset_params

    formats = parse_formats(args.format)
    overrides = parse_param_list(args.param)
    params = preset_params(args.preset, **overrides) if overrides else None
    if params is not None:
        params.validate()
    res = make_study(args.out, seed=args.seed, params=params, formats=formats, preset=args.preset, overwrite=args.overwrite)
    t = res["truth"]["truth"]
    for side in ("left", "right"):
        f = t["foramen"][side]
        print(f"{side} L4-5 foramen: height {f['height_mm']:.2f} mm, width {f['width_mm']:.2f} mm, area {f['area_mm2']:.1f} mm2")
    print(f"posterior disc height {t['posterior_disc_height_mm']:.2f} mm; dural sac area at L4-5 "
          f"{t['dsca_perpendicular_at_disc_mm2']:.1f} mm2 (perpendicular), {t['dsca_axial_at_disc_mm2']:.1f} mm2 (axial)")
    print(f"wrote {len(res['files'])} outputs to {res['out_dir']} in {res['seconds']:.1f} s (truth: {res['files']['truth']})")
    return 0


def register(subparsers) -> None:
    from spinemorph.phantom import PRESETS

    p = subparsers.add_parser(
        "phantom",
        help="simulate the lumbar phantom study (DICOM/NRRD/NIfTI images, label maps, exact truth)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--seed", type=int, default=0, help="random seed of noise and bias field (default 0)")
    p.add_argument("--preset", choices=list(PRESETS), default="normal", help="anatomy preset (default normal)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="override a PhantomParams field, e.g. disc_height_mm=6 (repeatable; see spinemorph.phantom)")
    p.add_argument("--format", default="dicom,nrrd,nifti", metavar="LIST",
                   help="comma-separated outputs: dicom, nrrd, nifti (default all)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs in --out")
    p.set_defaults(func=run)
