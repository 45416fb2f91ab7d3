"""Decoding, preprocessing, ONNX embedding, regions and decisions. Never imports torch."""
