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
from .registry import create_dataset, list_datasets
from .shapes import SHAPE_KINDS, ShapesDataset, render_shapes_scene
from .transforms import PadIfSmaller, Seeded, eval_transform, train_transform

__all__ = [
    "ADE20K",
    "CIFAR",
    "SHAPE_KINDS",
    "STL10",
    "Cityscapes",
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
    "depth_from_image",
    "eval_transform",
    "list_datasets",
    "render_shapes_scene",
    "subset_indices",
    "train_transform",
    "unpack_batch",
]
