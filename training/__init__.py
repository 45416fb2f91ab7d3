"""Model definition, training and ONNX export (the only subpackage that imports torch)."""
