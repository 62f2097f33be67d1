"""Names of the Greengrass v1 core's protocol that the core and a connector publishing as a Lambda both use."""

# The core's router: a Lambda publishes an MQTT message by invoking it (greengrasssdk's iot-data client does).
ROUTER_FUNCTION_ARN = "arn:aws:lambda:::function:GGRouter"
# What a publisher asks for when a target's queue is full: "" (the core's default), drop, or fail the publish.
BEST_EFFORT, ALL_OR_ERROR = "BestEffort", "AllOrError"
QUEUE_FULL_POLICIES = ("", BEST_EFFORT, ALL_OR_ERROR)
