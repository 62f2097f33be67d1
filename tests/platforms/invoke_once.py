"""One inference through the ML SDK, as a user's Lambda makes it: `eval "$(ggic env)"; python invoke_once.py IMG...`.

Run by tests/platforms/emulated.py inside the emulated device and on the host. Prints one JSON object:
{image: {"body": the connector's answer "[p0,...]", "seconds": round-trip time}}.
"""

import json
import sys
import time

import greengrass_machine_learning_sdk as ml


def main(paths):
    client = ml.client("inference")
    answers = {}
    for path in paths:
        with open(path, "rb") as image:
            body = image.read()
        content_type = "image/png" if body[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
        started = time.monotonic()
        response = client.invoke_inference_service(AlgoType="image-classification",
                                                    ServiceName="imageClassification",
                                                    ContentType=content_type, Body=body)
        answers[path] = {"body": response["Body"].read().decode(), "seconds": round(time.monotonic() - started, 3)}
    print(json.dumps(answers))


if __name__ == "__main__":
    main(sys.argv[1:])
