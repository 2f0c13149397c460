"""Label conventions shared by all tasks."""

BACKGROUND = 0

#: foramen task (3D): label value -> structure name
FORAMEN_LABELS = {1: "L4", 2: "L4-5 disc", 3: "L5"}
L4, DISC_L45, L5 = 1, 2, 3
#: optional 5th class of the fine 3D model: the dural sac / spinal canal (SPIDER label 100). Label maps of the
#: foramen task may carry it; code that needs only the bones and the disc reads FORAMEN_LABELS and ignores it.
CANAL = 4
FORAMEN_CANAL_LABELS = {**FORAMEN_LABELS, CANAL: "dural sac"}

#: DSCA task (2D): label value -> structure name
DSCA_LABELS = {1: "dural sac"}
DURAL_SAC = 1

#: display colours (RGB 0..1) used for .seg.nrrd segments and figures
COLORS = {
    "L4": (0.90, 0.85, 0.55),
    "L4-5 disc": (0.40, 0.70, 0.95),
    "L5": (0.85, 0.60, 0.40),
    "dural sac": (0.95, 0.90, 0.20),
}
