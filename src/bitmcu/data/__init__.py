"""Data: IDX/npz readers, data set lookup and download, downscaling and batched augmentation."""

from .datasets import Dataset, load_dataset
from .idx import read_idx
from .transforms import Augmenter, downscale

__all__ = ["Dataset", "load_dataset", "read_idx", "Augmenter", "downscale"]
