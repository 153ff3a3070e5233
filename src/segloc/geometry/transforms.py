"""Rigid transforms with an explicit quaternion order.

Convention: a transform named ``a_from_b`` maps points expressed in frame ``b`` into frame
``a``: ``x_a = R @ x_b + t``. ``cam_from_world`` maps world points into the camera (OpenCV
axes: x right, y down, z forward). Quaternions are stored scalar first (w, x, y, z), as in the
dataset folder format and COLMAP's text files; pycolmap's ``Rotation3d`` uses (x, y, z, w) and
ROS messages use named fields, so conversions say which order they take.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from segloc.errors import SeglocError


def quat_wxyz_to_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) from a unit quaternion (4,) in (w, x, y, z) order."""
    w, x, y, z = np.asarray(quat_wxyz, dtype=np.float64) / np.linalg.norm(quat_wxyz)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ]
    )


def matrix_to_quat_wxyz(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (4,) in (w, x, y, z) order with w >= 0 from a rotation matrix (3, 3)."""
    m = np.asarray(rotation, dtype=np.float64)
    # Shepperd's method: pick the largest diagonal term for numerical stability.
    trace = np.trace(m)
    candidates = np.array([trace, m[0, 0], m[1, 1], m[2, 2]])
    i = int(np.argmax(candidates))
    if i == 0:
        s = np.sqrt(1.0 + trace) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif i == 1:
        s = np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif i == 2:
        s = np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rotation matrix (3, 3) from a rotation vector (3,) (axis * angle in radians)."""
    rotvec = np.asarray(rotvec, dtype=np.float64)
    angle = np.linalg.norm(rotvec)
    if angle < 1e-12:
        kx = np.array([[0, -rotvec[2], rotvec[1]], [rotvec[2], 0, -rotvec[0]], [-rotvec[1], rotvec[0], 0]])
        return np.eye(3) + kx
    k = rotvec / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def matrix_to_axis_angle(rotation: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) (axis * angle in radians) from a rotation matrix (3, 3)."""
    q = matrix_to_quat_wxyz(rotation)
    sin_half = np.linalg.norm(q[1:])
    if sin_half < 1e-12:
        return 2.0 * q[1:]
    angle = 2.0 * np.arctan2(sin_half, q[0])
    return q[1:] / sin_half * angle


@dataclass(frozen=True)
class Rigid3:
    """A rigid transform ``a_from_b``: ``x_a = R(quat_wxyz) @ x_b + translation``.

    Attributes:
        quat_wxyz: (4,) unit quaternion, scalar first (w, x, y, z).
        translation: (3,) translation in the target frame, metres.
    """

    quat_wxyz: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0, 0.0]))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        q = np.asarray(self.quat_wxyz, dtype=np.float64).reshape(-1)
        t = np.asarray(self.translation, dtype=np.float64).reshape(-1)
        if q.shape != (4,) or t.shape != (3,):
            raise SeglocError(
                f"a rigid transform needs a 4-vector quaternion and a 3-vector translation, got shapes {q.shape} and {t.shape}"
            )
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(t))):
            raise SeglocError(f"non-finite pose: quaternion {q.tolist()}, translation {t.tolist()}")
        norm = np.linalg.norm(q)
        if norm < 1e-8:
            raise SeglocError(f"zero quaternion {q.tolist()}: a rotation needs a unit quaternion")
        q = q / norm
        if q[0] < 0:
            q = -q
        object.__setattr__(self, "quat_wxyz", q)
        object.__setattr__(self, "translation", t)

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def identity(cls) -> Rigid3:
        return cls()

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Rigid3:
        """From a (4, 4) or (3, 4) matrix ``[R | t]``."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape not in ((4, 4), (3, 4)):
            raise SeglocError(f"expected a 4x4 or 3x4 transform matrix, got shape {m.shape}")
        return cls(matrix_to_quat_wxyz(m[:3, :3]), m[:3, 3])

    @classmethod
    def from_rotation(cls, rotation: np.ndarray, translation: np.ndarray) -> Rigid3:
        """From a rotation matrix (3, 3) and a translation (3,)."""
        return cls(matrix_to_quat_wxyz(rotation), translation)

    @classmethod
    def from_quat_xyzw(cls, quat_xyzw: np.ndarray, translation: np.ndarray) -> Rigid3:
        """From a quaternion in (x, y, z, w) order, as pycolmap and ROS field order use."""
        x, y, z, w = np.asarray(quat_xyzw, dtype=np.float64)
        return cls(np.array([w, x, y, z]), translation)

    @classmethod
    def from_pycolmap(cls, rigid) -> Rigid3:
        """From a ``pycolmap.Rigid3d`` (its rotation quaternion is x, y, z, w)."""
        return cls.from_quat_xyzw(np.asarray(rigid.rotation.quat), np.asarray(rigid.translation))

    # --- accessors ----------------------------------------------------------------------
    @property
    def rotation(self) -> np.ndarray:
        """(3, 3) rotation matrix."""
        return quat_wxyz_to_matrix(self.quat_wxyz)

    @property
    def quat_xyzw(self) -> np.ndarray:
        """(4,) quaternion in (x, y, z, w) order."""
        return np.roll(self.quat_wxyz, -1)

    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    def to_pycolmap(self):
        import pycolmap

        return pycolmap.Rigid3d(pycolmap.Rotation3d(self.quat_xyzw), self.translation)

    # --- algebra ------------------------------------------------------------------------
    def inverse(self) -> Rigid3:
        """``b_from_a`` from ``a_from_b``."""
        rot_t = self.rotation.T
        return Rigid3.from_rotation(rot_t, -rot_t @ self.translation)

    def __mul__(self, other: Rigid3) -> Rigid3:
        """Composition: ``a_from_b * b_from_c = a_from_c``."""
        if not isinstance(other, Rigid3):
            return NotImplemented
        return Rigid3.from_rotation(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def transform_points(self, points: np.ndarray) -> np.ndarray:
        """Map points (N, 3) from frame b to frame a."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.rotation.T + self.translation

    @property
    def center(self) -> np.ndarray:
        """(3,) origin of frame a expressed in frame b (for ``cam_from_world``: the camera centre in the world)."""
        return -self.rotation.T @ self.translation

    def __repr__(self) -> str:
        q = np.array2string(self.quat_wxyz, precision=5, separator=", ")
        t = np.array2string(self.translation, precision=4, separator=", ")
        return f"Rigid3(quat_wxyz={q}, translation={t})"

    def __eq__(self, other: object) -> bool:  # exact comparison; use pose_error for tolerances
        if not isinstance(other, Rigid3):
            return NotImplemented
        return bool(np.array_equal(self.quat_wxyz, other.quat_wxyz) and np.array_equal(self.translation, other.translation))

    __hash__ = None  # type: ignore[assignment]


def interpolate_rigid(a: Rigid3, b: Rigid3, alpha: float) -> Rigid3:
    """Interpolate between two transforms: slerp on rotation, linear on translation.

    ``alpha = 0`` gives ``a``, ``alpha = 1`` gives ``b``.
    """
    qa, qb = a.quat_wxyz, b.quat_wxyz
    dot = float(np.dot(qa, qb))
    if dot < 0:
        qb, dot = -qb, -dot
    if dot > 0.9995:
        q = qa + alpha * (qb - qa)
    else:
        theta = np.arccos(np.clip(dot, -1.0, 1.0))
        q = (np.sin((1 - alpha) * theta) * qa + np.sin(alpha * theta) * qb) / np.sin(theta)
    return Rigid3(q, (1 - alpha) * a.translation + alpha * b.translation)


def pose_error(cam_from_world_est: Rigid3, cam_from_world_gt: Rigid3) -> tuple[float, float]:
    """Translation error (metres, between camera centres) and rotation error (degrees).

    The rotation error is the angle of ``R_est @ R_gt^T``.
    """
    t_err = float(np.linalg.norm(cam_from_world_est.center - cam_from_world_gt.center))
    r_rel = cam_from_world_est.rotation @ cam_from_world_gt.rotation.T
    cos = np.clip((np.trace(r_rel) - 1.0) / 2.0, -1.0, 1.0)
    return t_err, float(np.degrees(np.arccos(cos)))
