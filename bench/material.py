"""Real test material that ships inside installed packages: photos and the models built from packaged weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Dict, Tuple

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
DIGITS_MODEL = REPO / "tests" / "data" / "digits-resnet20"
DIGITS_ARCHIVE = REPO / "tests" / "data" / "digits-resnet20.tar.gz"


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, f"{name} is not installed"
    return Path(spec.origin).parent


def photo_files() -> Dict[str, Tuple[str, Path]]:
    """name → (content type, path) of real photographs with clear licences (see shared/reference)."""
    skimage_data = _package_dir("skimage") / "data"
    sklearn_images = _package_dir("sklearn") / "datasets" / "images"
    matplotlib_samples = _package_dir("matplotlib") / "mpl-data" / "sample_data"
    return {
        "coffee": ("image/png", skimage_data / "coffee.png"),
        "chelsea": ("image/png", skimage_data / "chelsea.png"),
        "astronaut": ("image/png", skimage_data / "astronaut.png"),
        "camera": ("image/png", skimage_data / "camera.png"),            # greyscale
        "logo": ("image/png", skimage_data / "logo.png"),                # RGBA
        "rocket": ("image/jpeg", skimage_data / "rocket.jpg"),
        "hubble": ("image/jpeg", skimage_data / "hubble_deep_field.jpg"),
        "china": ("image/jpeg", sklearn_images / "china.jpg"),
        "flower": ("image/jpeg", sklearn_images / "flower.jpg"),
        "grace_hopper": ("image/jpeg", matplotlib_samples / "grace_hopper.jpg"),
    }


def photos() -> Dict[str, Tuple[str, bytes]]:
    return {name: (content_type, path.read_bytes()) for name, (content_type, path) in photo_files().items()}


def as_jpeg(png_path: Path, quality: int = 95) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.imread(str(png_path), cv2.IMREAD_COLOR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return encoded.tobytes()


def reference_tensor(body: bytes, height: int, width: int) -> np.ndarray:
    """The documented preprocessing, written independently of connector.image_classification.imaging: decode like
    mxnet.image.imdecode (RGB), stretch bilinearly to W×H, NCHW float32, raw 0-255."""
    bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    rgb = bgr[:, :, ::-1]
    resized = cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=cv2.INTER_LINEAR)
    return resized.transpose(2, 0, 1)[None].astype(np.float32)


class ReferenceModel:
    """A direct MXNet forward of a SageMaker-layout model, with no connector code involved."""

    def __init__(self, model_dir: Path, epoch: int, shape: Tuple[int, int, int]) -> None:
        import mxnet as mx

        self.mx = mx
        self.shape = shape
        symbol, args, auxs = mx.model.load_checkpoint(str(model_dir / "image-classification"), epoch)
        self.module = mx.mod.Module(symbol, label_names=None, context=mx.cpu())
        self.module.bind(for_training=False, data_shapes=[("data", (1,) + shape)])
        self.module.set_params(args, auxs, allow_missing=True)

    def probabilities(self, body: bytes) -> np.ndarray:
        tensor = reference_tensor(body, self.shape[1], self.shape[2])
        self.module.forward(self.mx.io.DataBatch([self.mx.nd.array(tensor)]), is_train=False)
        return self.module.get_outputs()[0].asnumpy()[0]
