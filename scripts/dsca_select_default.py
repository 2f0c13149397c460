#!/usr/bin/env python
"""Pick the default DSCA model from evaluation JSONs (``scripts/dsca_evaluate.py``), not by hand.

    scripts/dsca_select_default.py runs/dsca_eval/*/evaluation.json [--write-catalog] [--out choice.json]

Rule (issue 16): the default is the network most accurate on data never trained on — the held-out real slab
patients, inside the imaged strip (the only real MR images here): highest accuracy score ``mean Dice − area MAE /
mean true area`` (``DuralSacSegLib.calibration.accuracy_score``: overlap and the reported area weigh alike; Dice alone
would prefer a network that over-segments), ties (0.001) broken by the higher Dice. The other parts (held-out synthetic, phantom bias) are listed for the
record. Evaluations must cover the same real planes (same ``row_step`` and patients), else the script refuses.
``--write-catalog`` sets ``"default"`` in ``DuralSacSeg/Resources/Models/catalog.json`` (MultiResUNet stays available
as the source method's network, whatever the choice).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def select_default(paths) -> dict:
    """Rank the evaluations; returns ``{"default": name, "ranking": [...], "rule": ...}``."""
    rows = []
    planes = set()
    for p in paths:
        doc = json.loads(Path(p).read_text(encoding="utf-8"))
        real = doc.get("real_slabs_strip") or {}
        if "mean_dice" not in real:
            raise SystemExit(f"error: {p} has no real_slabs_strip part; run scripts/dsca_evaluate.py with --parts real")
        planes.add((real.get("row_step"), tuple(real.get("patients") or ()), real.get("n_planes")))
        mae = real.get("area_mae_mm2")
        from DuralSacSegLib.calibration import accuracy_score

        rows.append({
            "model": doc.get("model", Path(p).parent.name), "evaluation": str(p), "score": accuracy_score(real),
            "real_mean_dice": real["mean_dice"], "real_area_mae_mm2": mae, "real_pearson_r": real.get("pearson_r"),
            "synthetic_mean_dice": (doc.get("synthetic") or {}).get("mean_slice_dice"),
            "phantom_bias_mm2": (doc.get("phantom_study") or {}).get("dsca_bias_mm2"),
            "threshold": doc.get("threshold"), "postprocess": doc.get("postprocess"),
        })
    if len(planes) > 1:
        raise SystemExit(f"error: the evaluations cover different real planes {sorted(map(str, planes))}; re-run them alike")
    if any(not math.isfinite(r["score"]) for r in rows):
        raise SystemExit("error: an evaluation lacks mean_true_area_mm2 / area MAE; re-run scripts/dsca_evaluate.py")
    rows.sort(key=lambda r: (-round(r["score"], 3), -r["real_mean_dice"], -r["score"]))
    return {"default": rows[0]["model"], "ranking": rows,
            "rule": "highest mean Dice - area MAE / mean true area inside the imaged strip of the held-out real slabs "
                    "(0.001), then higher Dice, then the unrounded score"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("evaluations", nargs="+", help="evaluation.json files of scripts/dsca_evaluate.py")
    ap.add_argument("--out", help="write the choice as JSON")
    ap.add_argument("--write-catalog", action="store_true", help="set the catalogue's default to the choice")
    args = ap.parse_args(argv)
    choice = select_default(args.evaluations)
    for r in choice["ranking"]:
        print(f"{r['model']:22s} score {r['score']:+.3f}  real strip Dice {r['real_mean_dice']:.3f}  MAE {r['real_area_mae_mm2']:.1f} mm²  "
              f"r {r['real_pearson_r'] if r['real_pearson_r'] is not None else float('nan'):.3f}")
    print(f"default: {choice['default']} ({choice['rule']})")
    if args.out:
        from spinemorph.atomic import atomic_write_text

        atomic_write_text(args.out, json.dumps(choice, indent=2) + "\n")
    if args.write_catalog:
        from DuralSacSegLib import models

        from spinemorph.atomic import atomic_write_text

        cat = models.read_catalog()
        names = [e["name"] for e in cat["models"]]
        if choice["default"] not in names:
            print(f"error: {choice['default']} is not in the catalogue ({', '.join(names)}); embed it first", file=sys.stderr)
            return 1
        cat["default"] = choice["default"]
        cat["default_rule"] = choice["rule"] + " (scripts/dsca_select_default.py)"
        atomic_write_text(models.CATALOG_PATH, json.dumps(cat, indent=2) + "\n")
        print(f"catalogue default set to {choice['default']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
