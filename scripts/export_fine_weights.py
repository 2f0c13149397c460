"""Export the fine model of a training run as the embedded fp16 weights + catalogue entry + model card.

``python scripts/export_fine_weights.py [RUN_DIR] [--name foramen3d-fine-cpu]``: takes ``RUN_DIR/best.pt`` (best
validation so far) or, before the first validation, the model of ``RUN_DIR/checkpoint.pt``; writes
``FORAMEN3D/Resources/Models/<name>.pt`` (replacing the previous file of that name), its catalogue entry (not the
default) and ``<name>.md`` (card with the run's iteration, validation history and the held-out evaluation in
``RUN_DIR/eval_heldout/metrics.json`` when present).

The catalogue's DSCA marker of the entry (``"dsca"``, ``"dsca_note"``) survives a re-export of the same weights
(:func:`FORAMEN3DLib.models3d.install_model`); new weights are marked ``"dsca": false`` until
``scripts/dsca3d_slabs.py`` has validated their canal class again. The entry stays the default when it was. Everything
in the existing card from the line ``KEEP_MARKER`` on (hand-written evaluation sections) is kept below the regenerated
part.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
from FORAMEN3DLib import models3d, train_fine
from FORAMEN3DLib.network3d import build_network

from spinemorph.atomic import atomic_write_text
from spinemorph.spider import SPIDER_ATTRIBUTION

#: hand-written card sections below this line survive a re-export
KEEP_MARKER = "<!-- sections below are kept by scripts/export_fine_weights.py -->"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", default="runs/foramen_fine")
    ap.add_argument("--name", default="foramen3d-fine-cpu")
    a = ap.parse_args()
    run = Path(a.run)
    cfg = json.loads((run / "config.json").read_text())
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    state = ck["state"]
    with tempfile.TemporaryDirectory() as tmp:
        src = run / "best.pt"
        if src.is_file():
            how = f"best validation so far (iteration {state['best_iteration']}, validation mean Dice {state['best']:.4f})"
        else:
            net = build_network(cfg["network"])
            net.load_state_dict(ck["model"])
            src = Path(tmp) / "ckpt.pt"
            train_fine.save_fine_weights(net, src, {"config": cfg["name"], "seed": cfg["seed"], "iteration": state["iteration"],
                                                    "infer_roi": cfg["infer_roi"], "val_patients": cfg["val_patients"],
                                                    "note": "latest checkpoint; no validation yet"})
            how = f"latest checkpoint (iteration {state['iteration']}; no validation had run yet)"
        file_stem = a.name.replace("-", "_")
        entry = models3d.install_model(src, a.name, description=(
            "Fine coarse-to-fine model (0.8 mm, 5 classes incl. dural sac; CPU training run): " + how),
            card=file_stem + ".md", default=False)
    cat = models3d.read_catalog()
    is_default = cat.get("default") == a.name
    card_path = models3d.MODELS_DIR / (file_stem + ".md")
    old_card = card_path.read_text() if card_path.is_file() else ""
    kept = old_card[old_card.index(KEEP_MARKER):] if KEEP_MARKER in old_card else ""
    dsca_line = ("usable for DSCA from 3D (`\"dsca\": true` in the catalogue)" if entry.get("dsca") is True else
                 "not used for DSCA from 3D (`\"dsca\": false` in the catalogue: " + entry.get("dsca_note", "") + ")")
    hist = (run / "history.csv").read_text() if (run / "history.csv").is_file() else "(no validation yet)\n"
    ev = run / "eval_heldout" / "metrics.json"
    if ev.is_file():
        evj = json.loads(ev.read_text())
        ev_text = (f"evaluated weights: iteration {evj.get('meta', {}).get('iteration')} of this run\n"
                   + json.dumps(evj["summary"], indent=1))
    else:
        ev_text = "(not evaluated)"
    lr_text = (f"AdamW lr {cfg['lr']:g} constant" if float(cfg['lr']) == float(cfg['lr_min']) else
               f"AdamW lr {cfg['lr']:g} cosine to {cfg['lr_min']:g}")
    levels_text = ("; training slabs whose levels the mask does not give named by the level network where its rule "
                   "accepts, `slab_identity_from_levels`" if cfg.get("slab_identity_from_levels") else "")
    card = f"""# {a.name} — fine FORAMEN3D model (coarse-to-fine, 0.8 mm, 5 classes)

**Status:** {how}; exported by `scripts/export_fine_weights.py`.
{"The default FORAMEN3D model of the catalogue" if is_default else f"Not the default model: select it by name (`--model {a.name}`)"};
{dsca_line}.

* Task: L4 (1), L4-5 disc (2), L5 (3), dural sac / spinal canal (4) in a lumbar MR volume.
* Pipeline (`FORAMEN3DLib.segment3d`, coarse-to-fine): the coarse model named in the weights (`foramen3d-budget-cpu`)
  locates the L4-5 disc; a 144×144×160
  crop of 0.8 mm voxels around it (canonical sagittal orientation) is segmented by MONAI sliding-window inference
  (ROI {cfg['infer_roi']}, Gaussian blending) and pasted back onto the input grid.
* Network: 3D U-Net, strided stem + full-resolution refinement: `{json.dumps(cfg['network'])}`; input = image +
  3 crop-coordinate channels. {entry['size_bytes']:,} bytes fp16, sha256 `{entry['sha256'][:16]}…`.
* Training (run config `{cfg.get('name')}`, this run: {lr_text}, sample weights {json.dumps(cfg.get('sample_weights'))}): 64³
  patches, batch 2, fp32 channels-last on 2 CPU threads; data: SynthSeg-style images synthesised from the SPIDER
  training label maps (SPACE and thick-slice masks, the latter shape-interpolated to 0.8 mm), procedural phantoms, and
  the real T2 SPACE slabs of training patients with partial labels (levels derived from the patient's own SPACE labels
  or by counting up from the lowest vertebral body{levels_text}; merged-class loss where they cannot be derived; loss
  only inside the slab). Config description: {cfg.get('description', '–')}
  Validation patients 191, 241, 22, 146; held-out test patients {', '.join(__import__('spinemorph.spider', fromlist=['x']).HELD_OUT_PATIENTS)} never used.
* Iterations so far: {state['iteration']}; run log `{run}/train.log` (copy: `foramen3d_fine_cpu_train.log`).

## Validation history (validation patients)

```
{hist}```

## Held-out evaluation (`python -m FORAMEN3DLib.evaluate_fine --slabs --synth 1`)

```
{ev_text}
```

Data: {SPIDER_ATTRIBUTION}
"""
    if kept:
        card += "\n" + kept
    atomic_write_text(card_path, card)
    if (run / "train.log").is_file():
        atomic_write_text(models3d.MODELS_DIR / (file_stem + "_train.log"), (run / "train.log").read_text())
    atomic_write_text(models3d.MODELS_DIR / "configs" / (file_stem + "_run_config.json"), json.dumps(cfg, indent=2))
    print(json.dumps(entry, indent=1))
    print(f"DSCA marker: {entry.get('dsca', 'absent')}; default: {is_default}; kept card sections: {bool(kept)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
