"""FORAMEN3D core (Slicer-free): 3D U-Net for L4 / L4-5 disc / L5, meshes, foraminal morphometry, planning.

Files named ``slicer_*.py`` are the Slicer glue and are imported only inside 3D Slicer.
"""
