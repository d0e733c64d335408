"""Datasets: a registry of real datasets, joint transforms and the synthetic ``shapes`` data."""

from .base import (
    DatasetInfo,
    DepthMap,
    IndexedSubset,
    Sample,
    SampleDataset,
    Task,
    as_tv_tensors,
    subset_indices,
)
from .batches import unpack_batch
from .check import DatasetReport, SplitReport, check_dataset
from .datasets import ADE20K, CIFAR, STL10, Cityscapes, VOCSegmentation
from .depth_io import depth_from_image
from .hf import HFDiskDataset
from .imagenet import ImageNet
from .nyu import NYUDepthV2
from .registry import (
    DatasetEntry,
    create_dataset,
    dataset_entry,
    dataset_origin,
    list_datasets,
    register_dataset,
)
from .shapes import SHAPE_KINDS, ShapesDataset, render_shapes_scene
from .transforms import PadIfSmaller, Seeded, eval_transform, train_transform

__all__ = [
    "ADE20K",
    "CIFAR",
    "SHAPE_KINDS",
    "STL10",
    "Cityscapes",
    "DatasetEntry",
    "DatasetInfo",
    "DatasetReport",
    "DepthMap",
    "HFDiskDataset",
    "ImageNet",
    "IndexedSubset",
    "NYUDepthV2",
    "PadIfSmaller",
    "Sample",
    "SampleDataset",
    "Seeded",
    "ShapesDataset",
    "SplitReport",
    "Task",
    "VOCSegmentation",
    "as_tv_tensors",
    "check_dataset",
    "create_dataset",
    "dataset_entry",
    "dataset_origin",
    "depth_from_image",
    "eval_transform",
    "list_datasets",
    "register_dataset",
    "render_shapes_scene",
    "subset_indices",
    "train_transform",
    "unpack_batch",
]
