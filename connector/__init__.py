"""ggic: the AWS IoT Greengrass v1 ML Image Classification connector, with a local Greengrass runtime to host it.

`core` is the local Greengrass core (it imports no connector); `image_classification` and `feedback` are the two
connectors; `contract` is what they share with the core; `control` is the control plane and the `ggic` command;
`devices` holds the device tools. `.importlinter` at the repository root states these rules.
"""

__version__ = "0.1.0"
