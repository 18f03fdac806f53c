"""Datasets: readers for the real point-cloud formats, one in-memory type, preprocessing.

from pcdistill.data import load_dataset
train = load_dataset("../shared/data/modelnet40_hdf5_1024", "train", num_points=1024)
train.points, train.labels, train.class_names, train.fingerprint()
"""

from pcdistill.data.dataset import PointCloudSet, concat
from pcdistill.data.folders import read_folders
from pcdistill.data.load import (
    BUILTIN_ROOT,
    MODELNET10_CLASSES,
    builtin_dataset,
    detect_format,
    load_dataset,
)
from pcdistill.data.modelnet_h5 import read_modelnet_h5
from pcdistill.data.modelnet_resampled import read_modelnet_resampled
from pcdistill.data.preprocess import PointSelector, normalize_unit_sphere, to_fps_order
from pcdistill.data.scanobjectnn import SCANOBJECTNN_CLASSES, read_scanobjectnn

__all__ = [
    "BUILTIN_ROOT",
    "MODELNET10_CLASSES",
    "SCANOBJECTNN_CLASSES",
    "PointCloudSet",
    "PointSelector",
    "builtin_dataset",
    "concat",
    "detect_format",
    "load_dataset",
    "normalize_unit_sphere",
    "read_folders",
    "read_modelnet_h5",
    "read_modelnet_resampled",
    "read_scanobjectnn",
    "to_fps_order",
]
