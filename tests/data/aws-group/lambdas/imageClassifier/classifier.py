"""An AWS-sample-shaped pinned Lambda: classifies the image each request carries with the group's image
classification connector (ML SDK) and publishes the probabilities, read from its Environment.Variables."""

import base64
import json
import os

import greengrasssdk
from greengrass_machine_learning_sdk import client as ml_client

iot = greengrasssdk.client("iot-data")
inference = ml_client("inference")


def handler(event, context):
    image = base64.b64decode(event["image"])
    response = inference.invoke_inference_service(
        AlgoType="image-classification", ServiceName=os.environ["SERVICE_NAME"],
        ContentType=event.get("content_type", "image/png"), Body=image)
    probabilities = json.loads(response["Body"].read().decode("utf-8"))
    iot.publish(topic=os.environ["PREDICTIONS_TOPIC"], payload=json.dumps({
        "thing": os.environ["THINGNAME"], "request": event.get("id"), "predictions": probabilities}))
