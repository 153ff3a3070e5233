"""What every method's localization shares: the result type and the Localizer protocol, camera ingest, robot frames, the pipeline.

- :mod:`~segloc.localize.base`: :class:`LocalizationResult` and the :class:`Localizer` protocol
  (below the methods: every method's localizer implements it);
- :mod:`~segloc.localize.ingest`: undistortion and resizing of camera images;
- :mod:`~segloc.localize.frames`: camera pose -> base pose -> ``map -> odom``, covariances;
- :mod:`~segloc.localize.pipeline`: ingest -> the method's stages -> pose -> the publishing
  decision, what the nodes and the evaluator both run (above the methods: it takes any localizer).

The methods themselves are in :mod:`segloc.methods`.
"""

from segloc.localize.base import LocalizationResult, Localizer

__all__ = ["LocalizationResult", "Localizer"]
