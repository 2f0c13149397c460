"""Implicit solids of the procedural phantom (canal coordinates) and the closed-form pieces of its exact areas.

Every solid has a bounding box (``lo``, ``hi``) and ``inside(X, Y, Z, m)`` (the solid eroded by ``m`` mm), so the
anatomy rasterises on any grid; :func:`arc_integral` and :func:`line_ellipse_interval` give the dural sac area on a
plane in closed form (:mod:`spinemorph.phantom`, "Exactness by design").
"""

from __future__ import annotations

import math

import numpy as np

# ----------------------------------------------------------------------------------------------------- primitives
BIG = 1.0e4


class Prim:
    """An implicit solid in canal coordinates with a bounding box. ``inside(X, Y, Z, m)`` = solid eroded by ``m``."""

    lo: np.ndarray
    hi: np.ndarray

    def inside(self, X, Y, Z, m: float = 0.0):  # pragma: no cover - abstract
        raise NotImplementedError


class Box(Prim):
    def __init__(self, x0, x1, y0, y1, z0, z1):
        self.lo = np.array([x0, y0, z0], float)
        self.hi = np.array([x1, y1, z1], float)

    def inside(self, X, Y, Z, m=0.0):
        lo, hi = self.lo + m, self.hi - m
        return (X >= lo[0]) & (X <= hi[0]) & (Y >= lo[1]) & (Y <= hi[1]) & (Z >= lo[2]) & (Z <= hi[2])


class DBody(Prim):
    """Vertebral body / disc: flat posterior wall at y'=0, half-elliptic anterior contour, z' in [z0, z1]."""

    def __init__(self, half_width, depth, z0, z1):
        self.a, self.d, self.z0, self.z1 = float(half_width), float(depth), float(z0), float(z1)
        self.lo = np.array([-self.a, -self.d, self.z0])
        self.hi = np.array([self.a, 0.0, self.z1])

    def inside(self, X, Y, Z, m=0.0):
        a, d = self.a - m, self.d - m
        yy = Y + 0.0  # ellipse centred on the posterior wall
        return (Y <= -m) & (Z >= self.z0 + m) & (Z <= self.z1 - m) & ((X / a) ** 2 + (yy / d) ** 2 <= 1.0)


class PedicleBox(Prim):
    """Pedicle: rectangle in (x', z') with rounded corners (radius r), extruded along y'."""

    def __init__(self, xc, half_w, zc, half_h, y0, y1, r=2.0):
        self.xc, self.hw, self.zc, self.hh, self.y0, self.y1, self.r = map(float, (xc, half_w, zc, half_h, y0, y1, r))
        self.lo = np.array([self.xc - self.hw, self.y0, self.zc - self.hh])
        self.hi = np.array([self.xc + self.hw, self.y1, self.zc + self.hh])

    def inside(self, X, Y, Z, m=0.0):
        hw, hh, r = self.hw - m, self.hh - m, max(self.r - m, 0.0)
        ax, az = np.abs(X - self.xc), np.abs(Z - self.zc)
        dx = np.maximum(ax - (hw - r), 0.0)
        dz = np.maximum(az - (hh - r), 0.0)
        return (ax <= hw) & (az <= hh) & (dx * dx + dz * dz <= r * r) & (Y >= self.y0 + m) & (Y <= self.y1 - m)


class EllYZ(Prim):
    """Elliptic prism along x': ((y'-yc)/ay)² + ((z'-zc)/az)² <= 1 and xmin <= |x'| <= xmax (both sides)."""

    def __init__(self, yc, zc, ay, az, xmax, xmin=0.0):
        self.yc, self.zc, self.ay, self.az, self.xmax, self.xmin = map(float, (yc, zc, ay, az, xmax, xmin))
        self.lo = np.array([-self.xmax, self.yc - self.ay, self.zc - self.az])
        self.hi = np.array([self.xmax, self.yc + self.ay, self.zc + self.az])

    def inside(self, X, Y, Z, m=0.0):
        ay, az = self.ay - m, self.az - m
        ax = np.abs(X)
        return (((Y - self.yc) / ay) ** 2 + ((Z - self.zc) / az) ** 2 <= 1.0) & (ax <= self.xmax - m) & (ax >= self.xmin)


class EllXY(Prim):
    """Elliptic cylinder along z': ((x'-xc)/ax)² + ((y'-yc)/ay)² <= 1, z' in [z0, z1]."""

    def __init__(self, xc, yc, ax, ay, z0=-BIG, z1=BIG):
        self.xc, self.yc, self.ax, self.ay, self.z0, self.z1 = map(float, (xc, yc, ax, ay, z0, z1))
        self.lo = np.array([self.xc - self.ax, self.yc - self.ay, self.z0])
        self.hi = np.array([self.xc + self.ax, self.yc + self.ay, self.z1])

    def inside(self, X, Y, Z, m=0.0):
        return (((X - self.xc) / (self.ax - m)) ** 2 + ((Y - self.yc) / (self.ay - m)) ** 2 <= 1.0) & (Z >= self.z0) & (Z <= self.z1)


class Ellipsoid(Prim):
    def __init__(self, c, semi):
        self.c, self.s = np.asarray(c, float), np.asarray(semi, float)
        self.lo, self.hi = self.c - self.s, self.c + self.s

    def inside(self, X, Y, Z, m=0.0):
        s = self.s - m
        return ((X - self.c[0]) / s[0]) ** 2 + ((Y - self.c[1]) / s[1]) ** 2 + ((Z - self.c[2]) / s[2]) ** 2 <= 1.0


class CylX(Prim):
    """Circular cylinder along x' (nerve root), radius r around (y', z') = (yc, zc), x0 <= x' <= x1."""

    def __init__(self, yc, zc, r, x0, x1):
        self.yc, self.zc, self.r, self.x0, self.x1 = map(float, (yc, zc, r, x0, x1))
        self.lo = np.array([self.x0, self.yc - self.r, self.zc - self.r])
        self.hi = np.array([self.x1, self.yc + self.r, self.zc + self.r])

    def inside(self, X, Y, Z, m=0.0):
        return ((Y - self.yc) ** 2 + (Z - self.zc) ** 2 <= (self.r - m) ** 2) & (X >= self.x0) & (X <= self.x1)


class Intersection(Prim):
    """Intersection of primitive ``a`` with ``b`` (bounding box of ``a``)."""

    def __init__(self, a: Prim, b: Prim):
        self.a, self.b = a, b
        self.lo, self.hi = np.maximum(a.lo, b.lo), np.minimum(a.hi, b.hi)

    def inside(self, X, Y, Z, m=0.0):
        return self.a.inside(X, Y, Z, m) & self.b.inside(X, Y, Z, m)


class Sac(Prim):
    """The dural sac: elliptic cylinder minus x'-prism indentations and the lateral-recess limit (see module doc)."""

    def __init__(self, a, b, yc, cuts: list[EllYZ], recess: EllYZ | None, c: float):
        self.a, self.b, self.yc, self.cuts, self.recess, self.c = float(a), float(b), float(yc), cuts, recess, float(c)
        self.lo = np.array([-self.a, self.yc - self.b, -BIG])
        self.hi = np.array([self.a, self.yc + self.b, BIG])

    def _ellipse(self, X, Y):
        return (X / self.a) ** 2 + ((Y - self.yc) / self.b) ** 2 <= 1.0

    def inside(self, X, Y, Z, m=0.0):
        ok = self._ellipse(X, Y)
        for cut in self.cuts:
            ok &= ~(((Y - cut.yc) / cut.ay) ** 2 + ((Z - cut.zc) / cut.az) ** 2 <= 1.0)
        if self.recess is not None:
            r = self.recess
            in_r = ((Y - r.yc) / r.ay) ** 2 + ((Z - r.zc) / r.az) ** 2 <= 1.0
            ok &= ~(in_r & (np.abs(X) > self.c))
        return ok


# ----------------------------------------------------------------------------------------------------- exact area
def arc_integral(u):
    """Antiderivative of sqrt(1-u²)."""
    u = min(max(u, -1.0), 1.0)
    return 0.5 * (u * math.sqrt(max(0.0, 1.0 - u * u)) + math.asin(u))


def line_ellipse_interval(y0, z0, ey, ez, yc, zc, ay, az):
    """Parameter interval [t1, t2] where (y0 + t ey, z0 + t ez) lies in the ellipse, or None."""
    dy, dz = (y0 - yc) / ay, (z0 - zc) / az
    py, pz = ey / ay, ez / az
    A = py * py + pz * pz
    B = 2 * (dy * py + dz * pz)
    C = dy * dy + dz * dz - 1.0
    disc = B * B - 4 * A * C
    if A <= 0 or disc <= 0:
        return None
    r = math.sqrt(disc)
    return ((-B - r) / (2 * A), (-B + r) / (2 * A))
