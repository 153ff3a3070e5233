"""Where a localizer's retrieval comes from: ``localize.retrieval: method | sfrs``, for every method.

``retrieval`` is an option of the ``localize:`` section that no method's config holds: it is
taken out here before the method reads its own options (:func:`load_localizer`, which the CLI
and the evaluator call). With ``sfrs`` the map's ``sfrs`` layer (:mod:`segloc.maps.sfrs`)
retrieves the most similar mapping images for each query. A localizer that has a retrieval
stage of its own and can take one from outside (:class:`RetrievalConsumer`: SegLoc, whose
approximation and refinement starts then come from SFRS's ranking, as from its own) gets the
retrieved images and similarities; any other gets a pose prior, the similarity-weighted mean of
the retrieved poses near the best one (:meth:`segloc.maps.sfrs.SfrsRetriever.pose_priors`), so
its own prior handling decides what it means (the reference matches against the mapping images
near it). No method is named here, and a method that ignores priors (``prior_use: none``) is
refused. A prior the caller gives (odometry, ``initialpose``) takes precedence over retrieval.

Result: the method's result with ``timings["sfrs_retrieve"]`` first and ``info["sfrs_retrieved"]``
(the mapping images, best first) and ``info["sfrs_similarities"]``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Protocol, runtime_checkable

import numpy as np

from segloc.errors import SeglocError
from segloc.geometry.camera import Camera
from segloc.geometry.transforms import Rigid3
from segloc.localize.base import LocalizationResult, Localizer

RETRIEVAL_OPTION = "retrieval"
RETRIEVAL_SOURCES = ("method", "sfrs")
SFRS_CANDIDATES = 5
"""Mapping images the sfrs retrieval reports per query (the best one gives the prior)."""


def split_retrieval_option(localize: dict[str, Any] | Any | None) -> tuple[str, dict[str, Any] | Any | None]:
    """``(source, the rest of the section)`` of a ``localize:`` section; a config object is the method's own (source ``method``).

    Raises:
        SeglocError: an unknown source.
    """
    if not isinstance(localize, dict) or RETRIEVAL_OPTION not in localize:
        return "method", localize
    rest = dict(localize)
    source = rest.pop(RETRIEVAL_OPTION)
    if source not in RETRIEVAL_SOURCES:
        raise SeglocError(f"localize.retrieval must be one of {', '.join(RETRIEVAL_SOURCES)}, got {source!r}")
    return source, rest


@runtime_checkable
class RetrievalConsumer(Protocol):
    """A localizer that runs its own pipeline from retrieved mapping images given from outside."""

    def localize_retrieved(self, image: np.ndarray, camera: Camera, image_ids: np.ndarray, similarities: np.ndarray) -> LocalizationResult:
        """Localize ``image`` from mapping images ``image_ids`` (R,) (core order, best first) and their ``similarities`` (R,)."""


class RetrievalPriorLocalizer:
    """A method's localizer whose retrieval, when no prior is given, comes from the ``sfrs`` layer (module docstring).

    Other attributes (``method``, ``ingest_max_edge``, ``derived_options``, ...) are the
    wrapped localizer's.
    """

    def __init__(self, localizer: Localizer, retriever, num_candidates: int = SFRS_CANDIDATES):
        self.localizer, self.retriever, self.num_candidates = localizer, retriever, num_candidates

    def __getattr__(self, name: str) -> Any:
        return getattr(self.localizer, name)

    def inference_status(self) -> list:
        """The method's network sessions, then the retrieval network's."""
        from segloc.runtime.session import inference_statuses

        return [*inference_statuses(self.localizer), *self.retriever.inference_status()]

    def localize(self, image: np.ndarray, camera: Camera, prior: Rigid3 | None = None) -> LocalizationResult:
        if prior is not None:
            return self.localizer.localize(image, camera, prior)
        start = time.perf_counter()
        priors = self.retriever.pose_priors(np.asarray(image), self.num_candidates)
        ids, similarities = priors.image_ids, priors.similarities
        seconds = time.perf_counter() - start
        if isinstance(self.localizer, RetrievalConsumer):
            result = self.localizer.localize_retrieved(image, camera, ids, similarities)
        else:
            result = self.localizer.localize(image, camera, priors.poses[0])
        info = {
            **result.info,
            "sfrs_retrieved": [self.retriever.names[int(i)] for i in ids],
            "sfrs_similarities": [round(float(s), 6) for s in similarities],
        }
        return dataclasses.replace(result, timings={"sfrs_retrieve": seconds, **result.timings}, info=info)


def load_localizer(
    method,
    package,
    localize: dict[str, Any] | Any | None = None,
    device: str | None = None,
    backend: str | None = None,
    threads: int | None = None,
) -> Localizer:
    """The localizer of ``method`` (a :class:`segloc.methods.Method`) over an opened map, retrieval as ``localize`` says.

    ``device``, ``backend`` and ``threads`` override the method's inference options
    (:func:`segloc.runtime.session.with_runtime`; None keeps the config's); the sfrs retrieval
    network runs on the method's device and runtime, or for a method without a network on
    ``device``, ``backend`` and ``threads`` alone (torch on the CPU by default).

    Raises:
        SeglocError: ``retrieval: sfrs`` for a method that ignores priors, or a map without the layer.
    """
    source, rest = split_retrieval_option(localize)
    from segloc.runtime.session import RuntimeConfig, with_runtime

    config = with_runtime(method.localize_config(rest), device, backend, threads)
    localizer = method.load_localizer(package, config)
    if source == "method":
        return localizer
    if method.prior_use == "none":
        raise SeglocError(f"localize.retrieval: sfrs gives a pose prior, but method {method.name!r} ignores priors (prior_use none)")
    from segloc.maps.sfrs import SfrsRetriever

    runtime = getattr(config, "runtime", None)
    if not isinstance(runtime, RuntimeConfig):  # a method without a network: the overrides alone
        runtime = RuntimeConfig(backend or "torch", threads or 0)
    retriever = SfrsRetriever.from_map(package, getattr(config, "device", None) or device or "cpu", runtime)
    return RetrievalPriorLocalizer(localizer, retriever)
