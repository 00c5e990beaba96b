"""Datasets: loading by name, generic readers, near-duplicate groups and leak-free splits."""

from medsure.data.base import ImageDataset
from medsure.data.dedup import (
    average_hash,
    difference_hash,
    duplicate_groups,
    group_label_conflict,
    hamming_matrix,
    near_duplicate_groups,
)
from medsure.data.medmnist import (
    FLAGS as MEDMNIST_FLAGS,
)
from medsure.data.medmnist import (
    download_file,
    fetch_medmnist,
    load_medmnist,
    load_medmnist_npz,
    md5sum,
)
from medsure.data.readers import (
    map_mask_values,
    read_csv_labelled,
    read_dicom,
    read_folder_per_class,
    read_hdf5_patches,
    read_image,
    read_image_mask_pairs,
    read_images,
    read_nifti,
    to_uint8,
)
from medsure.data.registry import (
    available_datasets,
    default_data_root,
    embedded_manifest,
    load_dataset,
)
from medsure.data.split import official_splits, split_dataset, split_indices, stratum_labels
from medsure.data.transforms import resize_images, resize_masks

__all__ = [
    "ImageDataset",
    "load_dataset",
    "split_dataset",
    "split_indices",
    "official_splits",
    "stratum_labels",
    "available_datasets",
    "default_data_root",
    "embedded_manifest",
    "average_hash",
    "difference_hash",
    "duplicate_groups",
    "group_label_conflict",
    "hamming_matrix",
    "near_duplicate_groups",
    "MEDMNIST_FLAGS",
    "download_file",
    "fetch_medmnist",
    "load_medmnist",
    "load_medmnist_npz",
    "md5sum",
    "map_mask_values",
    "read_csv_labelled",
    "read_dicom",
    "read_folder_per_class",
    "read_hdf5_patches",
    "read_image",
    "read_image_mask_pairs",
    "read_images",
    "read_nifti",
    "to_uint8",
    "resize_images",
    "resize_masks",
]
