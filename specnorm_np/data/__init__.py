"""CIFAR-10 data: find, download and verify the official files, load them safely, and draw
subsets, splits and transformed batches.

The entry point is :func:`load_cifar10`, which returns ``(x_train, y_train), (x_test, y_test)``
(uint8 ``(N, 32, 32, 3)`` images, int64 labels) like Keras's ``cifar10.load_data()``;
:class:`ArrayDataset` adds stratified subsets, a train/validation split and batches converted to
float32 one at a time. :func:`load_digits_images` gives scikit-learn's 8×8 digits in the same
convention, for use without CIFAR-10.
"""

from specnorm_np.data.cifar10 import (
    CLASS_NAMES,
    ENVIRONMENT_VARIABLE,
    IMAGES_PER_BATCH,
    OFFICIAL_CONTENT_SHA256,
    OFFICIAL_MD5,
    find_cifar10_folder,
    load_cifar10,
    read_batch,
    read_meta,
    resolve_data_root,
    verify_checksums,
)
from specnorm_np.data.content import content_sha256
from specnorm_np.data.dataset import ArrayDataset, BatchIterator, cifar10_dataset
from specnorm_np.data.digits import load_digits_images
from specnorm_np.data.download import download_cifar10, download_file, extract_archive
from specnorm_np.data.errors import ChecksumError, DatasetError, DownloadError, UnsafePickleError
from specnorm_np.data.safe_pickle import RestrictedUnpickler, safe_load
from specnorm_np.data.transforms import (
    ChannelStandardization,
    Compose,
    GlobalContrastNormalization,
    RandomCrop,
    RandomHorizontalFlip,
    channel_statistics,
    horizontal_flip,
)

__all__ = [
    "load_cifar10", "cifar10_dataset", "load_digits_images", "ArrayDataset", "BatchIterator",
    "download_cifar10", "download_file", "extract_archive", "verify_checksums", "content_sha256",
    "read_batch",
    "read_meta", "resolve_data_root", "find_cifar10_folder", "safe_load", "RestrictedUnpickler",
    "GlobalContrastNormalization", "ChannelStandardization", "RandomCrop",
    "RandomHorizontalFlip", "Compose", "horizontal_flip", "channel_statistics",
    "DatasetError", "UnsafePickleError", "ChecksumError", "DownloadError",
    "CLASS_NAMES", "ENVIRONMENT_VARIABLE", "IMAGES_PER_BATCH", "OFFICIAL_MD5",
    "OFFICIAL_CONTENT_SHA256",
]
