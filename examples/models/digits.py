"""Train a small real SageMaker-layout model: ResNet-20 on scikit-learn's 8×8 handwritten digits.

The connector's tests need a model whose answers are known to be right, small enough to commit.  The digits ship
inside scikit-learn, so training needs no download.  Every training image goes through the same PNG encoding and
`connector.image_classification.imaging.preprocess` path a client request takes (8×8 grey PNG → 3×28×28 raw 0-255
RGB), so the network learns exactly what the connector will feed it.

    python -m examples.models.digits --dest tests/data/digits-resnet20 --tarball tests/data/digits-resnet20.tar.gz
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from connector.image_classification.imaging import PNG, preprocess

from . import resnet
from ._artifact import load_module, predict, write_artifact, write_tarball

logger = logging.getLogger(__name__)

IMAGE_SHAPE = "3,28,28"
NUM_LAYERS = 20
NUM_CLASSES = 10
HELDOUT_SIZE = 450
EPOCHS = 6
BATCH_SIZE = 64
LEARNING_RATE = 0.1
MOMENTUM = 0.9
WEIGHT_DECAY = 1e-4
SEED = 0


class AccuracyError(RuntimeError):
    """The trained model is less accurate than a usable test fixture must be."""


def digit_png(image_8x8: np.ndarray) -> bytes:
    """Encode one digit (values 0..16) as the 8×8 greyscale PNG a client would send."""
    pixels = np.clip(np.rint(np.asarray(image_8x8, dtype=np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    if pixels.shape != (8, 8):
        raise ValueError(f"expected an 8x8 digit image, got shape {pixels.shape}")
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise RuntimeError("OpenCV could not encode the digit as PNG")
    return encoded.tobytes()


def split() -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split into (training indices, held-out indices) of `load_digits()`."""
    labels = load_digits().target
    train_idx, heldout_idx = train_test_split(np.arange(len(labels)), test_size=HELDOUT_SIZE, random_state=0,
                                              stratify=labels)
    return np.sort(train_idx), np.sort(heldout_idx)


def model_input(image_8x8: np.ndarray) -> np.ndarray:
    """The 1×3×28×28 tensor the connector makes from this digit's PNG."""
    _, height, width = resnet.parse_image_shape(IMAGE_SHAPE)
    return preprocess(digit_png(image_8x8), PNG, height, width)


def train(dest_dir: str | Path, epochs: int = EPOCHS, seed: int = SEED) -> Path:
    """Train from scratch on the training split and write the artifact (params numbered by `epochs`)."""
    mx.random.seed(seed)
    np.random.seed(seed)  # NDArrayIter shuffles with numpy's global generator
    digits = load_digits()
    train_idx, _ = split()
    data = np.concatenate([model_input(digits.images[i]) for i in train_idx])
    labels = digits.target[train_idx].astype(np.float32)
    batches = mx.io.NDArrayIter(data, labels, batch_size=BATCH_SIZE, shuffle=True, label_name="softmax_label")

    symbol = resnet.get_symbol(NUM_CLASSES, NUM_LAYERS, IMAGE_SHAPE)
    module = mx.mod.Module(symbol, data_names=("data",), label_names=("softmax_label",), context=mx.cpu())
    module.fit(
        batches,
        num_epoch=epochs,
        optimizer="sgd",
        optimizer_params={"learning_rate": LEARNING_RATE, "momentum": MOMENTUM, "wd": WEIGHT_DECAY},
        initializer=mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2),
        eval_metric="acc",
    )
    arg_params, aux_params = module.get_params()
    return write_artifact(dest_dir, symbol, arg_params, aux_params, epochs, resnet.parse_image_shape(IMAGE_SHAPE))


def heldout_accuracy(model_dir: str | Path) -> float:
    """Reload the artifact as the connector does (batch 1) and score it on the held-out PNGs."""
    module = load_module(model_dir)
    digits = load_digits()
    _, heldout_idx = split()
    correct = sum(int(predict(module, model_input(digits.images[i]))[0].argmax() == digits.target[i])
                  for i in heldout_idx)
    return correct / len(heldout_idx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train ResNet-20 on sklearn digits into the SageMaker IC layout.")
    parser.add_argument("--dest", required=True, help="output directory for the three artifact files")
    parser.add_argument("--tarball", help="also write a flat model.tar.gz of the artifact here")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--min-accuracy", type=float, default=0.97)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    started = time.perf_counter()
    dest = train(args.dest, epochs=args.epochs)
    trained = time.perf_counter() - started
    accuracy = heldout_accuracy(dest)
    print(f"trained in {trained:.1f} s; held-out accuracy {accuracy:.2%} ({HELDOUT_SIZE} images, batch 1)")
    if accuracy < args.min_accuracy:
        raise AccuracyError(f"held-out accuracy {accuracy:.2%} is below {args.min_accuracy:.0%}")
    if args.tarball:
        write_tarball(dest, args.tarball)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
