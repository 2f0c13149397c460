"""``spinemorph synth``: synthesise MR-like images from a label map (SynthSeg-style, :mod:`spinemorph.synth`).

Writes ``synth_<NNN>_image.nrrd`` (float32 in [0, 1]), ``synth_<NNN>_labels.nrrd`` (the deformed label map) and
``synth_params.json`` (the drawn parameters of every sample) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from spinemorph.atomic import atomic_write_text, prepare_output_dir
from spinemorph.errors import InputError
from spinemorph.volume import read_volume, write_volume

log = logging.getLogger(__name__)

MAX_SAMPLES = 1000

EPILOG = """\
label maps:
  A SPIDER case (--spider, e.g. 104_t2) is mapped to the common "generic" scheme (every vertebra and disc its own
  structure: vertebra n counted from L5 = 1, disc 200+n below it, 100 dural sac). A label map file is used as is:
  labels 1-99 are bone, 100 CSF, 201-299 disc, other labels get their own random tissue; a map with labels 0-3 only
  is read as the foramen map (1 L4, 2 L4-5 disc, 3 L5).

reslicing:
  none     keep the label map's grid
  axial    4 mm axial slices (slice thickness simulated), in-plane = finest input spacing (at least 0.5 mm)
  iso0.8   0.8 mm isotropic sagittal grid (PIR, like 3D T2 SPACE)

examples:
  spinemorph synth labels.nrrd --out synth/ --n 4 --contrast t1
  spinemorph synth --spider 104_t2 --out synth/ --reslice iso0.8 --seed 3
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="synthesise MR-like training images from a label map (SynthSeg-style)",
        description=(
            "Synthesise MR-like images from a label map: random per-label intensities (T1-like, T2-like or random "
            "contrast), background tissue blobs, random affine and elastic deformation (applied to image and labels "
            "alike), slice-thickness simulation, bias field, Rician noise and gamma. Deterministic per --seed."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("labels", nargs="?", help="label map file (.nrrd, .nii, .nii.gz, .mha, .mhd)")
    p.add_argument("--spider", metavar="CASE", help="use the SPIDER label volume CASE instead of a file (e.g. 104_t2)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--n", type=int, default=1, help=f"number of samples (1-{MAX_SAMPLES}, default 1)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--contrast", choices=("t1", "t2", "random"), default="random", help="intensity priors (default random)")
    p.add_argument("--reslice", choices=("none", "axial", "iso0.8"), default="none", help="output grid (default none)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=lambda args: run(args, p))


def _load(args, parser):
    from spinemorph import spider, synth

    if args.spider:
        if spider.spider_root() is None:
            raise InputError(f"--spider needs the SPIDER data; set {spider.ENV_VAR} to the spider folder")
        series = spider.get_series(args.spider)
        labels = spider.remap_labels(spider.load_mask(series), series, "generic")
        return labels, None, f"SPIDER {series.case}", spider.SPIDER_ATTRIBUTION
    labels = read_volume(Path(args.labels))
    arr = np.asarray(labels.array)
    if np.issubdtype(arr.dtype, np.floating) and not np.all(np.mod(arr[np.isfinite(arr)], 1) == 0):
        raise InputError(f"{args.labels} has non-integer voxel values; pass a label map (segmentation), not an image")
    present = set(np.unique(arr).astype(int).tolist())
    tissues = synth.FORAMEN_TISSUES if present <= {0, 1, 2, 3} else None
    return labels, tissues, str(args.labels), None


def run(args, parser) -> int:
    from spinemorph import synth

    if bool(args.labels) == bool(args.spider):
        parser.error("give either a label map file or --spider CASE (exactly one)")
    if not 1 <= args.n <= MAX_SAMPLES:
        parser.error(f"--n must be between 1 and {MAX_SAMPLES}")
    names = [f"synth_{s:03d}_{kind}.nrrd" for s in range(args.n) for kind in ("image", "labels")] + ["synth_params.json"]
    out = prepare_output_dir(args.out, args.overwrite, names)
    labels, tissues, what, attribution = _load(args, parser)
    source = synth.prepare_labels(labels, tissues, fine_spacing_mm=None if args.reslice == "none" else 0.8)
    records = []
    for s in range(args.n):
        seed = int(np.random.default_rng([args.seed, s]).integers(2**31))
        res = synth.synthesize_volume(labels, seed, args.contrast, args.reslice, source=source)
        write_volume(res.image, out / f"synth_{s:03d}_image.nrrd")
        write_volume(res.labels, out / f"synth_{s:03d}_labels.nrrd")
        rec = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v) for k, v in res.params.items()}
        rec.update(sample=s, image=f"synth_{s:03d}_image.nrrd", labels=f"synth_{s:03d}_labels.nrrd",
                   spacing_mm=list(res.image.spacing_mm), size_ijk=list(res.image.size_ijk))
        records.append(rec)
        log.info("sample %d/%d: %s contrast, size %s", s + 1, args.n, res.params["contrast"], res.image.size_ijk)
    meta = {"input": what, "seed": args.seed, "contrast": args.contrast, "reslice": args.reslice, "samples": records}
    if attribution:
        meta["attribution"] = attribution
    atomic_write_text(out / "synth_params.json", json.dumps(meta, indent=2) + "\n")
    print(f"wrote {args.n} synthetic image(s) and label map(s) to {out}")
    return 0
