"""The bundled ``digits`` dataset: scikit-learn's 1,797 handwritten 8x8 digits (no download)."""

from __future__ import annotations

import numpy as np
import torch

from ._core import DataBundle, DataError, Split, channel_stats, resize_uint8, seeded_generator, stratified_order

DIGITS_TOTAL = 1797
DIGITS_TEST = 360  # 20 %, giving the customary 1437 / 360 split


def load_digits_bundle(
    *,
    image_size: int | None = None,
    num_classes: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    data_seed: int = 0,
) -> DataBundle:
    """Digits as uint8 ``[N, 1, 8, 8]`` (pixel values 0..16 scaled to 0..255), split into a
    class-stratified test set of ``test_size`` (default 360) and a train set of
    ``train_size`` (default: the other 1437) by ``data_seed``. ``image_size`` resizes
    (bilinear) when given."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:  # pragma: no cover - scikit-learn is a core dependency
        raise DataError("dataset 'digits' needs scikit-learn: pip install scikit-learn") from e
    if num_classes is not None and num_classes != 10:
        raise DataError(f"dataset 'digits' has 10 classes, got num_classes={num_classes}")
    raw = load_digits()
    images = np.asarray(raw.images, dtype=np.float64)  # [1797, 8, 8], 0..16
    x = torch.from_numpy(np.rint(images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)).unsqueeze(1)
    y = torch.from_numpy(np.asarray(raw.target, dtype=np.int64))

    n_test = DIGITS_TEST if test_size is None else test_size
    if n_test < 1 or n_test >= len(y):
        raise DataError(f"dataset 'digits': test_size must be between 1 and {len(y) - 1}, got {n_test}")
    n_train = len(y) - n_test if train_size is None else train_size
    if n_train < 1 or n_train + n_test > len(y):
        raise DataError(
            f"dataset 'digits': train_size must be between 1 and {len(y) - n_test} "
            f"(1797 images minus test_size={n_test}), got {n_train}"
        )
    order = stratified_order(y, seeded_generator("digits-split", data_seed))
    test_idx = torch.sort(order[:n_test]).values
    train_idx = torch.sort(order[n_test : n_test + n_train]).values
    train = Split(x[train_idx].contiguous(), y[train_idx].contiguous())
    test = Split(x[test_idx].contiguous(), y[test_idx].contiguous())
    size = 8
    if image_size is not None:
        if image_size < 1:
            raise DataError(f"dataset 'digits': image_size must be >= 1, got {image_size}")
        size = image_size
        train = Split(resize_uint8(train.x, size), train.y)
        test = Split(resize_uint8(test.x, size), test.y)
    mean, std = channel_stats(train.x)
    return DataBundle(
        name="digits",
        train=train,
        test=test,
        num_classes=10,
        in_channels=1,
        image_size=size,
        mean=mean,
        std=std,
        class_names=[str(i) for i in range(10)],
    )
