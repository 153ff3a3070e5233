"""Dataset readers and writers, and synthetic scenes.

- :mod:`segloc.data.dataset`: the dataset folder (the interchange format), re-exported here.
- :mod:`segloc.data.colmap`, :mod:`segloc.data.kapture`, :mod:`segloc.data.rosbag`: other
  sources, each with a ``*_to_dataset`` converter.
- :mod:`segloc.data.synthetic`: rendered scenes with labels, depth and rosbag2 output.
"""

from segloc.data.dataset import Dataset, ImageRecord, load_image, read_dataset, read_image_list, save_image, write_dataset

__all__ = ["Dataset", "ImageRecord", "load_image", "read_dataset", "read_image_list", "save_image", "write_dataset"]
