"""Builders of real models in the SageMaker image-classification artifact layout.

They exist so that tests and benchmarks exercise the connector with genuine MXNet checkpoints (a ResNet trained
here on scikit-learn digits, a converted pretrained EfficientNet-Lite0, random-weight ResNets) rather than
hand-made stand-ins.  Run the modules with ``python -m examples.models.<name>`` from the repository root.
"""
