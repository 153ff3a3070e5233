"""What the three nodes of the split SegLoc deployment share: the SegLoc localizer they load from the map.

segmentation_node, retrieval_node and pose_refinement_node each run one stage of
:class:`segloc.methods.segloc.localizer.SegLocLocalizer` (``segment``, ``retrieval``,
``localize_segmentation``): the same code that the one-process localizer (``localizer_node``)
and the evaluator run, so that they compute the same poses. Only segmentation_node loads the
network.
"""

from __future__ import annotations

from segloc.config import load_config
from segloc.errors import SeglocError
from segloc.localize.tracking import TrackingConfig
from segloc.maps.package import MapPackage
from segloc.methods.segloc.localizer import SegLocLocalizer, SegLocLocalizerConfig
from segloc.runtime.session import with_runtime

__all__ = ["load_segloc_localizer", "load_tracking_config"]


def load_tracking_config(config_path: str) -> TrackingConfig:
    """The ``tracking:`` section of a segloc config file ('' = defaults)."""
    return load_config(TrackingConfig, config_path or None, section="tracking")


def load_segloc_localizer(
    package: MapPackage, config_path: str, device: str, with_network: bool, backend: str = "torch", threads: int = 0
) -> SegLocLocalizer:
    """The SegLoc localizer of a split node.

    Args:
        package: the opened map; it must be a SegLoc map.
        config_path: a segloc config file whose ``localize:`` section sets the options ('' = defaults).
        device: the node's ``device`` parameter.
        with_network: load the embedded network (segmentation_node only).
        backend, threads: the node's ``backend`` and ``threads`` parameters (the network's runtime).

    Raises:
        SeglocError: a map of another method (run it with localizer_node), or a bad config.
    """
    if package.method != "segloc":
        raise SeglocError(
            f"map {package.path} is a {package.method!r} map: the split nodes run SegLoc; localize with it through localizer_node"
        )
    config = load_config(SegLocLocalizerConfig, config_path or None, section="localize")
    return SegLocLocalizer.from_map(package, with_runtime(config, device, backend, threads), with_network=with_network)
