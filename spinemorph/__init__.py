"""SpineMorph shared Slicer-free core: image IO and geometry, phantoms, synthesis, command line.

Nothing in this package imports 3D Slicer.
"""

__version__ = "0.1.0"
