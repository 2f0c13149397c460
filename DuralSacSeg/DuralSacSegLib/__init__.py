"""DuralSacSeg core (Slicer-free): 2D networks, per-slice dural sac cross-sectional area, training, inference.

Files named ``slicer_*.py`` are the Slicer glue and are imported only inside 3D Slicer.
"""
