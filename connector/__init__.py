"""ML Image Classification connector: a SageMaker image-classification model served over Greengrass v1 IPC."""

__version__ = "0.1.0"
