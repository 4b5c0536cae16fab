"""The standard body: its shape tables, and painting soft tissue, organs and skeleton onto a canvas."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bench.data.synthetic.canvas import BLADDER, BLOOD_POOL, BRAIN, LIVER, LUNG, _Body, _Canvas, _q, _within

# Shapes are written for a standard body 175 cm tall, in mm (x to the left, y to
# posterior, z up from the floor); each patient's canvas maps its grid into those
# coordinates through its height (skeleton and organs) and adds its own muscle
# girth and subcutaneous fat. Later shapes paint over earlier ones.

SKULL, SPINE, RIBS, PELVIS, FEMUR, HUMERUS = 1, 2, 3, 4, 5, 6  # bone sites, for placing lesions
_STANDARD_HEIGHT = 1750.0

# Torso core (muscle and viscera, before fat): z, centre x, centre y, half-width, half-depth, rotation.
_TORSO = np.array([
    [810, 0, 5, 150, 100, 0], [900, 0, 0, 180, 112, 0], [1000, 0, 0, 156, 108, 0], [1080, 0, 0, 142, 105, 0],
    [1180, 0, 0, 146, 108, 0], [1300, 0, 0, 155, 112, 0], [1420, 0, 5, 160, 100, 0], [1470, 0, 10, 135, 80, 0],
    [1495, 0, 15, 75, 62, 0],
], float)  # fmt: skip
_NECK = np.array([[1480, 0, 15, 58, 60, 0], [1590, 0, 15, 56, 62, 0]], float)
_THIGH = np.array([[450, 95, 0, 55, 52, 0], [600, 100, 0, 65, 62, 0], [760, 100, 5, 75, 75, 0],
                   [880, 92, 5, 82, 80, 0]], float)  # fmt: skip
_LUNG = np.array([[1165, 74, -8, 46, 68, 0], [1200, 72, -8, 48, 70, 0], [1300, 72, -8, 52, 76, 0],
                  [1400, 68, -5, 45, 62, 0], [1470, 55, 5, 22, 25, 0]], float)  # fmt: skip
# Centre y of the vertebral bodies along the spine (lordosis and kyphosis).
_SPINE_Y = np.array([[870, 75], [930, 58], [990, 40], [1050, 28], [1150, 35], [1250, 48], [1380, 50], [1470, 38],
                     [1530, 20], [1610, 15]], float)  # fmt: skip
# Vertebrae from C2 down: height, disc below, body half-width, body half-depth, spinous process length.
_VERTEBRAE = (
    [(15.0, 5.0, 16.0, 12.0, 14.0)] * 6
    + [(17.0 + 6.0 * i / 11, 5.0 + 2.0 * i / 11, 16.0 + 6.0 * i / 11, 13.0 + 4.0 * i / 11, 22.0) for i in range(12)]
    + [(27.0, 9.0, 24.0, 18.0, 24.0)] * 5
)
_C2_TOP = 1600.0
_SKULL_BASE = 1595.0  # lower edge of the skull (the foramen magnum's level); C2's tip rises into the ring above it
# Ribs 1-12: half-width, half-depth, anterior drop (mm) and how far round the chest each reaches (0 to 1).
_RIB_A = (60, 82, 100, 112, 120, 126, 130, 132, 132, 130, 126, 120)
_RIB_B = (40, 55, 66, 74, 79, 82, 84, 85, 85, 83, 80, 76)
_RIB_DROP = (35, 55, 70, 80, 90, 100, 110, 115, 115, 110, 90, 70)
_RIB_END = (0.95,) * 7 + (0.85, 0.78, 0.72, 0.58, 0.5)
# Iliac wing on the left (mirrored to the right): z, centre x, centre y, half-length, half-thickness, angle.
_ILIUM = np.array([[925, 77.5, 12.5, 32, 9, -0.785], [980, 83, 7.5, 55, 7, -0.88], [1040, 89, 7.5, 61, 6, -0.883],
                   [1062, 97, 12, 46, 5, -0.97]], float)  # fmt: skip
_SACRUM = np.array([[880, 0, 75, 15, 10, 0], [930, 0, 58, 40, 18, 0], [985, 0, 42, 52, 22, 0]], float)


def _body(row: Mapping) -> _Body:
    return _Body(
        k=float(row["height_mm"]) / _STANDARD_HEIGHT,
        muscle=float(row["muscle"]),
        fat=float(row["fat_mm"]),
        dx=float(row["dx_mm"]),
        dy=float(row["dy_mm"]),
    )


def _mirror(knots: np.ndarray) -> np.ndarray:
    out = knots.copy()
    out[:, 1] *= -1
    out[:, 5] *= -1
    return out


def _paint_anatomy(c: _Canvas) -> None:
    fat = c.fat
    m = c.muscle
    # Soft tissue: torso, neck, head, thighs, arms.
    c.soft_tube(_TORSO, fat)
    c.soft_tube(_NECK, 0.4 * fat)
    c.soft_ellipsoid((0, 10, 1640), (76, 96, 112), 4.0)  # head
    for side in (1, -1):
        thigh = _THIGH.copy()
        thigh[:, 1] *= side
        c.soft_tube(thigh, fat)
    torso_half_width = float(np.interp(1150, _TORSO[:, 0], _TORSO[:, 3])) * m + fat
    arm_r = 40.0 * m + 0.6 * fat
    elbow_x = torso_half_width + 6.0 + arm_r
    head_x = 172.0
    for side in (1, -1):
        c.soft_ellipsoid((side * 175, 5, 1440), (48 * m, 52 * m, 55 * m), 0.6 * fat)  # shoulder
        upper = np.array([[1150, side * elbow_x, 10, 40, 40, 0], [1440, side * head_x, 5, 44, 44, 0]], float)
        c.soft_tube(upper, 0.6 * fat)
        fore = np.array([[870, side * (elbow_x + 5), -15, 26, 28, 0], [1150, side * elbow_x, 10, 36, 36, 0]], float)
        c.soft_tube(fore, 0.5 * fat)
        c.soft_ellipsoid((side * (elbow_x + 5), -15, 820), (15 * m, 42 * m, 62), 0.3 * fat)  # hand

    # Organs inside the core.
    for side in (1, -1):
        lung = _LUNG.copy()
        lung[:, 1] *= side
        got = c.tube(lung)
        if got is not None:
            idx, (u, v, ax, ay, ang), _ = got
            # The diaphragm domes into the lung base; the right one stands higher, over the liver.
            dome = c.ellipsoid((side * 58, -5, 1110 if side < 0 else 1100), (125, 125, 105 if side < 0 else 100))
            below = _within(dome, idx, np.broadcast_shapes(u.shape, v.shape))
            c.organ(idx, (_q(u, v, ax, ay, ang) <= 1) & ~below, LUNG)
    for centre, radii, label in (
        ((-55, -8, 1165), (72, 75, 70), LIVER),
        ((15, -30, 1290), (58, 50, 62), BLOOD_POOL),
        ((0, -45, 935), (38, 30, 30), BLADDER),
    ):
        got = c.ellipsoid(centre, radii)
        if got is not None:
            c.organ(got[0], got[1] <= 1, label)

    _paint_spine(c)
    _paint_ribs(c)
    _paint_shoulder_girdle(c, head_x, elbow_x)
    _paint_pelvis_and_femora(c)
    _paint_skull_and_brain(c)


def _spine_y(z):
    return np.interp(z, _SPINE_Y[:, 0], _SPINE_Y[:, 1])


def _vertebra_levels() -> list[tuple[float, float, tuple]]:
    """(bottom, top, geometry) of every vertebra from C2 to L5."""
    levels, top = [], _C2_TOP
    for geom in _VERTEBRAE:
        height, disc = geom[0], geom[1]
        levels.append((top - height, top, geom))
        top -= height + disc
    return levels


def _paint_spine(c: _Canvas) -> None:
    t = c.t
    for bottom, top, (_, _, ax, ay, spinous) in _vertebra_levels():
        yb = float(_spine_y(0.5 * (bottom + top)))
        reach = ay + 28 + spinous
        blk = c.block((-ax - 30, yb - ay, bottom), (ax + 30, yb + reach, top))
        if blk is None:
            continue
        idx, X, Y, Z = blk
        ends = (Z >= bottom + t) & (Z <= top - t)
        body = _q(X, Y - yb, ax, ay, 0) <= 1
        body_in = (_q(X, Y - yb, ax - t, ay - t, 0) <= 1) & ends
        ya = yb + ay + 12  # neural arch around the canal
        arch = _q(X, Y - ya, 0.8 * ax, 14, 0) <= 1
        canal = _q(X, Y - (yb + ay + 9), 9, 8, 0) <= 1
        ys = yb + ay + 22 + spinous / 2
        spine_process = _q(X, Y - ys, 4.5, spinous / 2, 0) <= 1
        tx, yt = ax + 10, yb + ay + 8  # transverse processes, left and right
        transverse = _q(np.abs(X) - tx, Y - yt, 14, 6, 0) <= 1
        outer = body | arch | spine_process | transverse
        arch_in = (_q(X, Y - ya, 0.8 * ax - t, 14 - t, 0) <= 1) & ~(_q(X, Y - (yb + ay + 9), 9 + t, 8 + t, 0) <= 1)
        inner = body_in | arch_in | (_q(np.abs(X) - tx, Y - yt, 14 - t, 6 - t, 0) <= 1)
        c.bone(idx, outer & ~canal, inner & ~canal, SPINE)
        c.carve(idx, canal & ~body)
    c.bone_tube(_SACRUM, PELVIS)


def _paint_ribs(c: _Canvas) -> None:
    t = c.t
    half_r, half_z = 4.5, 7.0  # rib cross-section: thin radially, taller in z
    levels = _vertebra_levels()[6:18]  # T1..T12
    for i, (bottom, top, _) in enumerate(levels):
        z0 = 0.5 * (bottom + top)
        A, B, drop, end = _RIB_A[i], _RIB_B[i], _RIB_DROP[i], _RIB_END[i]
        yc = float(_spine_y(z0)) + 28 - B
        blk = c.block((-A - 8, yc - B - 8, z0 - drop - 10), (A + 8, yc + B + 8, z0 + 10))
        if blk is None:
            continue
        idx, X, Y, Z = blk
        u, v = X, Y - yc
        phi = np.arctan2(v / B, u / A)
        rho = np.sqrt((u / A) ** 2 + (v / B) ** 2)
        radius = np.sqrt((A * np.cos(phi)) ** 2 + (B * np.sin(phi)) ** 2)
        d_r = (rho - 1.0) * radius
        s = 0.5 * (1.0 - np.sin(phi))  # 0 at the spine, 1 at the sternum
        d_z = Z - (z0 - drop * s)
        arc = (s <= end) & ~((np.abs(u) < 22) & (v > 0))
        outer = ((d_r / half_r) ** 2 + (d_z / half_z) ** 2 <= 1) & arc
        inner = None
        if half_r > t:
            inner = ((d_r / (half_r - t)) ** 2 + (d_z / (half_z - t)) ** 2 <= 1) & arc
        c.bone(idx, outer, inner, RIBS)
    # Sternum, in front of the heart.
    c.bone_tube(np.array([[1250, 0, -95, 16, 7, 0], [1440, 0, -92, 18, 7, 0]], float), RIBS)


def _paint_shoulder_girdle(c: _Canvas, head_x: float, elbow_x: float) -> None:
    for side in (1, -1):
        c.bone_capsule((side * 20, -85, 1475), (side * 90, -70, 1490), 7.0, RIBS)  # clavicle
        c.bone_capsule((side * 90, -70, 1490), (side * 160, -20, 1480), 7.0, RIBS)
        scapula = np.array([[1330, side * 98, 60, 45, 6, -side * 0.6], [1460, side * 110, 45, 55, 7, -side * 0.6]])
        c.bone_tube(scapula, RIBS)
        c.bone_ellipsoid((side * head_x, 5, 1445), (23, 23, 23), HUMERUS)
        shaft = np.array([[1160, side * elbow_x, 10, 11, 11, 0], [1430, side * head_x, 5, 11, 11, 0]], float)
        c.bone_tube(shaft, HUMERUS, caps=False, cortex=3.5)
        c.bone_ellipsoid((side * elbow_x, 10, 1150), (26, 12, 15), HUMERUS)
        for dy in (-8.0, 10.0):  # radius and ulna
            fore = np.array([[880, side * (elbow_x + 5), -15 + dy, 6, 6, 0], [1140, side * elbow_x, 10 + dy, 7, 7, 0]])
            c.bone_tube(fore, HUMERUS, caps=False, cortex=2.5)


def _paint_pelvis_and_femora(c: _Canvas) -> None:
    for side in (1, -1):
        knots = _ILIUM if side > 0 else _mirror(_ILIUM)
        c.bone_tube(knots, PELVIS)
        c.bone_ellipsoid((side * 98, 0, 910), (34, 34, 36), PELVIS)  # acetabulum
        c.bone_capsule((side * 92, -20, 895), (side * 18, -68, 878), 10.0, PELVIS)  # superior pubic ramus
        c.bone_ellipsoid((side * 10, -70, 870), (9, 12, 20), PELVIS)  # symphysis
        c.bone_capsule((side * 15, -66, 855), (side * 55, -15, 830), 8.0, PELVIS)  # inferior ramus
        c.bone_capsule((side * 85, 15, 895), (side * 62, 25, 840), 14.0, PELVIS)  # ischium
        got = c.capsule((side * 95, 0, 905), (side * 95, 0, 905), 26.0)  # hip joint space
        if got is not None:
            c.carve(got[0], got[1] <= 26.0**2)
        c.bone_capsule((side * 95, 0, 905), (side * 95, 0, 905), 23.0, FEMUR)  # femoral head
        c.bone_capsule((side * 95, 0, 905), (side * 135, 8, 880), 15.0, FEMUR)  # neck
        c.bone_ellipsoid((side * 148, 12, 885), (18, 20, 28), FEMUR)  # greater trochanter
        shaft = np.array([[480, side * 100, 5, 14, 14, 0], [870, side * 140, 8, 15, 15, 0]], float)
        c.bone_tube(shaft, FEMUR, caps=False, cortex=5.0)


def _paint_skull_and_brain(c: _Canvas) -> None:
    centre, radii = np.array([0, 12, 1655.0]), np.array([70, 90, 95.0])
    t, diploe = c.t, 3.0
    got = c.ellipsoid(centre, radii)
    if got is None:
        return
    idx, q0 = got
    Z = c.z[idx[0]][:, None, None]
    vault = Z >= _SKULL_BASE
    shape = q0.shape
    q1 = _within(c.ellipsoid(centre, radii - t), idx, shape)
    q2 = _within(c.ellipsoid(centre, radii - t - diploe), idx, shape)
    q3 = _within(c.ellipsoid(centre, radii - 2 * t - diploe), idx, shape)
    outer = (q0 <= 1) & ~q3 & vault
    c.bone(idx, outer, q1 & ~q2 & vault, SKULL)
    csf = 5.0  # meninges and fluid between the brain and the inner table; keeps the brain's glow off the skull
    brain = _within(c.ellipsoid(centre, radii - 2 * t - diploe - csf), idx, shape) & (Z >= 1625)  # above C2
    c.organ(idx, brain, BRAIN)
