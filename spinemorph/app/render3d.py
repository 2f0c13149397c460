"""Headless 3D snapshots of surface meshes: VTK offscreen rendering, matplotlib 3D as fallback."""

from __future__ import annotations

import io
import logging

import numpy as np

from spinemorph.polydata import polydata_from_triangles, triangles_from_polydata

log = logging.getLogger(__name__)


def _as_vtk(mesh):
    return mesh if hasattr(mesh, "GetNumberOfPoints") else polydata_from_triangles(*mesh)


def _as_arrays(mesh):
    return triangles_from_polydata(mesh) if hasattr(mesh, "GetNumberOfPoints") else mesh


def snapshot_vtk(meshes, size_px=(720, 540), view: str = "left-posterior-oblique") -> bytes:
    """Render ``meshes`` (list of (mesh, rgb, opacity); mesh = vtkPolyData or (verts N×3, faces M×3) in LPS mm)
    offscreen with VTK and return PNG bytes."""
    import vtk

    # without a display VTK tries X11 first and logs a warning before it falls back to EGL / OSMesa
    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
    ren = vtk.vtkRenderer()
    ren.SetBackground(1.0, 1.0, 1.0)
    for mesh, rgb, opacity in meshes:
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(_as_vtk(mesh))
        mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*rgb)
        actor.GetProperty().SetOpacity(opacity)
        ren.AddActor(actor)
    win = vtk.vtkRenderWindow()
    win.SetOffScreenRendering(1)
    win.AddRenderer(ren)
    win.SetSize(*size_px)
    cam = ren.GetActiveCamera()
    # LPS: look from the patient's left-posterior side, superior up
    directions = {"left-posterior-oblique": (1.0, 0.8, 0.25), "left": (1.0, 0.0, 0.0), "posterior": (0.0, 1.0, 0.0)}
    d = np.asarray(directions.get(view, directions["left-posterior-oblique"]))
    ren.ResetCamera()
    fp = np.asarray(cam.GetFocalPoint())
    dist = cam.GetDistance()
    cam.SetPosition(*(fp + d / np.linalg.norm(d) * dist))
    cam.SetViewUp(0, 0, 1)
    ren.ResetCamera()
    cam.Zoom(1.3)
    win.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(win)
    grab.ReadFrontBufferOff()
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.WriteToMemoryOn()
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()
    data = bytes(memoryview(writer.GetResult()))
    win.Finalize()
    return data


def snapshot_matplotlib(meshes, size_px=(720, 540)) -> bytes:
    """Fallback renderer: matplotlib ``plot_trisurf``-style 3D (slower, lower quality, always headless)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    fig = plt.figure(figsize=(size_px[0] / 100, size_px[1] / 100), dpi=100)
    ax = fig.add_subplot(projection="3d")
    allv = []
    for mesh, rgb, opacity in meshes:
        verts, faces = _as_arrays(mesh)
        step = max(1, len(faces) // 20000)
        coll = Poly3DCollection(verts[faces[::step]], facecolor=rgb, edgecolor="none", alpha=opacity)
        ax.add_collection3d(coll)
        allv.append(verts)
    v = np.vstack(allv)
    centre, half = v.mean(0), (v.max(0) - v.min(0)).max() / 2
    for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
        setter(c - half, c + half)
    ax.view_init(elev=15, azim=35)
    ax.set_axis_off()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def snapshot(meshes, size_px=(720, 540)) -> tuple[bytes, str]:
    """PNG bytes of the meshes and the renderer used (``"vtk"`` or ``"matplotlib"``)."""
    try:
        png = snapshot_vtk(meshes, size_px)
        if len(png) > 1000:
            return png, "vtk"
    except Exception as exc:  # noqa: BLE001 - any rendering back-end failure falls back to matplotlib
        log.info("VTK offscreen rendering unavailable (%s); using matplotlib", exc)
    return snapshot_matplotlib(meshes, size_px), "matplotlib"
