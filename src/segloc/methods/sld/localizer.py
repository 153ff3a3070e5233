"""The SLD* localizer: landmark heatmaps -> 2D-3D matches -> PnP.

For a query image: the image is resized to the network's input size (longer edge ``max_edge``
of the map), the ensemble gives one heatmap per landmark (one batched call), each heatmap's
peak is refined to sub-pixel by the weighted mean in a window around its maximum
(:func:`~segloc.methods.sld.heatmaps.heatmap_peaks`), peaks below ``detection_threshold`` are
dropped, and the detections (at most one per landmark) with the landmarks' 3D positions go to
LO-RANSAC P3P and a non-linear refinement (:func:`segloc.geometry.pose.estimate_absolute_pose`,
pycolmap). The detection score ``v`` gives a confidence ``w = v^2``: the weights order the
detections (the ``max_detections`` most confident are used), are reported, and go to the PnP,
whose ``pnp.sampling`` decides their use: ``uniform`` (the default, pycolmap) ignores them,
``prosac`` draws the minimal samples from the most confident detections first
(:mod:`segloc.geometry.ransac`, poselib). A pose prior restricts the landmarks to those in front
of the prior camera and inside its image (with a margin), when ``use_prior`` is on.

Uniform stays the default because it measured as well as PROSAC at the default RANSAC budget
(``benchmarks/pnp_sampling.py``, demo room map, evening and severe queries, 5 seeds): within a
few points of recall at every threshold, and PROSAC ranked by confidence no better than PROSAC
over shuffled detections, while poselib's MSAC localized fewer of the queries with under about
ten detections. PROSAC pays where RANSAC gets few samples: with ``pnp.max_iterations: 10`` it
beat uniform sampling by 3 to 9 points of recall at 0.25 m / 2 deg and 4 to 7 at 0.5 m / 5 deg
(shuffled detections did not), with 30 by 0 to 4 points.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from segloc.config import check_options, option
from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.pose import PnPConfig, estimate_absolute_pose
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult
from segloc.maps.package import MapPackage
from segloc.methods.sld.heatmaps import heatmap_peaks
from segloc.methods.sld.layer import read_sld_layer, read_sld_model
from segloc.runtime.session import InferenceSession, RuntimeConfig, SessionStatus

logger = logging.getLogger("segloc")


SLD_PIXEL_FLOOR = 1.3
"""Default ``pnp.pixel_floor`` of SLD*, image pixels: the error that all the detections of an image
share (peaks of stride-8 heatmaps, 0.16 cells at the demo's 320 px input). Fitted for 95 % of the
true poses inside the 95 % ellipsoid on the demo room's evening and severe queries, checked on
an office the fit never saw (``benchmarks/covariance.py --floor-option pnp.pixel_floor``)."""


@dataclass
class SldLocalizerConfig:
    """Options of :class:`SldLocalizer`.

    Attributes:
        detection_threshold: heatmap peaks below this are not detections (targets peak at 1).
        peak_window: half-size of the sub-pixel refinement window, heatmap cells.
        max_detections: use at most this many detections, the most confident first (0: all).
        pnp: RANSAC and refinement options.
        use_prior: with a pose prior, keep only the landmarks it sees (inside its image, widened
            by ``prior_margin`` of the image size on each side).
        prior_margin: see ``use_prior``.
        device: torch device of the network.
        threads: torch CPU threads (0: torch's default).
        runtime: the network's inference backend (``torch``, ``onnxruntime``, ``tensorrt``,
            ``auto``; :class:`segloc.runtime.RuntimeConfig`). The ONNX backends use the map's
            export for its image size (``segloc export MAP``), else one exported per input size
            and cached.
    """

    detection_threshold: float = option(0.3, ge=0)
    peak_window: int = option(2, ge=0)
    max_detections: int = option(0, ge=0, note="0: all")
    pnp: PnPConfig = field(default_factory=lambda: PnPConfig(max_error_px=8.0, min_inliers=6, pixel_floor=SLD_PIXEL_FLOOR))
    use_prior: bool = False
    prior_margin: float = option(0.25, ge=0)
    device: str = "cpu"
    threads: int = option(0, ge=0, note="0: torch's default")
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def __post_init__(self) -> None:
        check_options(self)


def network_input_size(camera: Camera, max_edge: int) -> tuple[int, int]:
    """(width, height) of the landmark network's input for images of ``camera``: the longer side ``max_edge``."""
    scale = max_edge / max(camera.width, camera.height)
    return max(1, round(camera.width * scale)), max(1, round(camera.height * scale))


@dataclass
class Detections:
    """Landmarks detected in one image.

    Attributes:
        landmark_ids: (D,) int64 landmark (heatmap) index of each detection.
        points2D: (D, 2) float64 pixels in the query image (COLMAP convention).
        scores: (D,) float64 peak values v.
    """

    landmark_ids: np.ndarray
    points2D: np.ndarray
    scores: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """(D,) confidences w = v^2."""
        return self.scores**2


class SldLocalizer:
    """Localizes images against an ``sld`` map (layers ``core``, ``sld``, ``sld_model``).

    Args:
        model: the landmark network (:class:`segloc.models.landmarks.LandmarkEnsemble`).
        positions: (L, 3) landmark positions in heatmap order.
        max_edge: longer image edge the network runs at.
        stride: the network's output stride.
        config: localization options.
        package: the map, whose ``onnx`` layer may hold the network's export.

    The network runs through one :class:`segloc.runtime.session.InferenceSession` per input
    size (a map's queries usually have one).
    """

    method = "sld"

    def __init__(
        self,
        model: torch.nn.Module,
        positions: np.ndarray,
        max_edge: int,
        stride: int,
        config: SldLocalizerConfig | None = None,
        package: MapPackage | None = None,
    ):
        self.config = config or SldLocalizerConfig()
        self.model = model.eval().to(self.config.device)
        self.positions = np.asarray(positions, np.float64)
        self.max_edge = int(max_edge)
        self.ingest_max_edge = self.max_edge
        self.stride = int(stride)
        self.package = package
        self.sessions: dict[tuple[int, int], InferenceSession] = {}
        if self.config.threads:
            torch.set_num_threads(self.config.threads)

    @classmethod
    def from_map(cls, map_path: str | Path | MapPackage, config: SldLocalizerConfig | None = None) -> SldLocalizer:
        """Load the localizer from a map package (a path or an opened package)."""
        package = map_path if isinstance(map_path, MapPackage) else MapPackage.open(map_path)
        layer = read_sld_layer(package)
        model = read_sld_model(package)
        if model.config.num_landmarks != len(layer.positions):
            raise SeglocError(
                f"map {package.path}: the network has {model.config.num_landmarks} heatmaps for {len(layer.positions)} landmarks"
            )
        logger.info("sld localizer: map %s with %d landmarks, %d network(s)", package.path, len(layer.positions), model.config.num_networks)
        return cls(model, layer.positions, layer.max_edge, layer.stride, config, package)

    def inference_status(self) -> list[SessionStatus]:
        """How the landmark network runs (backend, engine cache, fallback), per input size seen so far."""
        return [session.status for session in self.sessions.values()]

    def session(self, size: tuple[int, int]) -> InferenceSession:
        """The network's session for inputs of ``size`` (width, height), made on first use."""
        if size not in self.sessions:
            from segloc.models.export import GRAPHS, network_session, read_onnx_layer

            runtime = self.config.runtime
            onnx_path = (
                read_onnx_layer(self.package, self.model, size) if (self.package is not None and runtime.backend != "torch") else None
            )
            self.sessions[size] = network_session(self.model, runtime, self.config.device, onnx_path, size, GRAPHS["landmarks"])
        return self.sessions[size]

    # --- stages -------------------------------------------------------------------------
    def input_size(self, camera: Camera) -> tuple[int, int]:
        """(width, height) the network sees for images of ``camera``."""
        return network_input_size(camera, self.max_edge)

    def heatmaps(self, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
        """(L, h, w) heatmaps of an (H, W, 3) uint8 image resized to ``size``."""
        resized = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if (image.shape[1], image.shape[0]) != size else image
        tensor = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1)[None].float().div(255.0)
        with torch.inference_mode():
            return self.session(size).run({"image": tensor.to(self.config.device)})["heatmaps"][0].float().cpu()

    def detect(self, image: np.ndarray, camera: Camera, landmarks: np.ndarray | None = None) -> Detections:
        """Landmark detections in ``image`` (pixels of ``camera``), restricted to ``landmarks`` when given."""
        size = self.input_size(camera)
        peaks = heatmap_peaks(self.heatmaps(image, size), self.stride, self.config.peak_window)
        scale = np.array([camera.width / size[0], camera.height / size[1]])
        keep = peaks.values >= self.config.detection_threshold
        if landmarks is not None:
            allowed = np.zeros(len(keep), bool)
            allowed[landmarks] = True
            keep &= allowed
        ids = np.flatnonzero(keep)
        ids = ids[np.argsort(-peaks.values[ids], kind="stable")]
        if self.config.max_detections:
            ids = ids[: self.config.max_detections]
        return Detections(ids, peaks.points[ids] * scale, peaks.values[ids])

    def landmarks_seen_by(self, prior: Rigid3, camera: Camera) -> np.ndarray:
        """Landmark ids in front of the ``prior`` camera and inside its image widened by ``prior_margin``."""
        points2D, depth, _ = camera.world_to_image(prior, self.positions)
        margin = self.config.prior_margin * np.array([camera.width, camera.height])
        with np.errstate(invalid="ignore"):
            inside = (
                (depth > 0)
                & np.all(points2D >= -margin, axis=1)
                & np.all(points2D <= np.array([camera.width, camera.height]) + margin, axis=1)
            )
        return np.flatnonzero(inside)

    # --- the pipeline -------------------------------------------------------------------
    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        """Localize ``image`` (H, W, 3) RGB uint8 taken by ``camera``.

        Returns:
            The result; ``info`` holds ``num_detections``, ``detections`` (landmark id, x, y,
            score per detection), ``mean_weight`` and ``failure_reason`` (None on success).
        """
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or (image.shape[1], image.shape[0]) != (camera.width, camera.height):
            raise SeglocError(f"image of shape {image.shape} does not match the camera size {camera.width}x{camera.height}")
        timings: dict[str, float] = {}
        info: dict = {"num_detections": 0, "failure_reason": None}

        start = time.perf_counter()
        landmarks = self.landmarks_seen_by(prior, camera) if (prior is not None and self.config.use_prior) else None
        detections = self.detect(image, camera, landmarks)
        info["num_detections"] = len(detections.landmark_ids)
        info["mean_weight"] = float(detections.weights.mean()) if len(detections.scores) else 0.0
        info["detections"] = [
            [int(i), round(float(x), 2), round(float(y), 2), round(float(s), 3)]
            for i, (x, y), s in zip(detections.landmark_ids, detections.points2D, detections.scores)
        ]
        timings["detect"] = time.perf_counter() - start

        start = time.perf_counter()
        estimate = None
        if len(detections.landmark_ids) < max(4, self.config.pnp.min_inliers):
            info["failure_reason"] = f"too few landmarks detected ({len(detections.landmark_ids)})"
        else:
            estimate = estimate_absolute_pose(
                detections.points2D, self.positions[detections.landmark_ids], camera, self.config.pnp, detections.weights
            )
            if estimate is None:
                info["failure_reason"] = (
                    f"PnP found no pose with at least {self.config.pnp.min_inliers} inliers among {len(detections.landmark_ids)} detections"
                )
        timings["pose"] = time.perf_counter() - start
        if estimate is None:
            return LocalizationResult(None, timings=timings, info=info)
        info["reprojection_rmse_px"] = estimate.reprojection_rmse_px
        return LocalizationResult(estimate.cam_from_world, estimate.covariance, estimate.num_inliers, timings, info)
