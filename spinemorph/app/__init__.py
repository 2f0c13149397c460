"""The application layer of SpineMorph: what a user runs, on top of the computation.

- ``cli``, ``cmd_*``: the ``spinemorph`` command line (one module per command; the ``dsca`` and ``foramen`` command
  groups are registered by ``DuralSacSegLib.cli`` and ``FORAMEN3DLib.cli``);
- ``study``, ``study_report``, ``htmlreport``, ``render3d``: one MRI study end to end and its HTML report;
- ``batch``, ``batch_dask``, ``batch_summary``: many cases, in this process or on a Dask cluster;
- ``bench``, ``bench_networks``, ``bench_report``: the performance benchmark;
- ``inference_worker``: the separate process the Slicer modules run a segmentation in.

It may import everything below it (the core and data modules of :mod:`spinemorph`, ``DuralSacSegLib``,
``FORAMEN3DLib``); nothing below imports it (``Testing/test_import_layers.py``, DEVELOPERS.md "Layers").
"""
