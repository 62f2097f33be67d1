"""The ML Image Classification connector: a SageMaker image-classification model served to `invoke_inference_service`.

Two entries, one request path: `hosting` (natively in our runtime) and `handler` (a long-lived Lambda on a
Greengrass core) both run `endpoint`; `supervisor` keeps the time and memory promises over the `worker` processes,
which alone load the engine (`service`, `imaging`, and the one `engines` chooses: `model` (MXNet), `onnx_model`
(ONNX Runtime) or `opencv_model` (OpenCV cv2.dnn)).
"""
