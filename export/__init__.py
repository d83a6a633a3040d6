"""Export stage: distillation, ONNX export, INT8 quantization, TensorRT engines, model packages."""
