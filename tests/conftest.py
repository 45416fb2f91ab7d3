"""Shared fixtures: real artifacts built in seconds, no mocks.

``tiny_bundle`` is a genuine ONNX model (written with onnx.helper, run by ONNX Runtime) that
embeds an image as its mean-centred 8x8 thumbnail: a weak but honest "tiny image" embedding,
good enough to tell different synthetic images apart, so the pipeline, index and scanner can
be tested without waiting for a trained network.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def make_tiny_onnx(input_size: int = 64, grid: int = 8) -> bytes:
    import onnx
    from onnx import TensorProto, helper

    k = input_size // grid
    dim = 3 * grid * grid
    nodes = [
        helper.make_node("AveragePool", ["image"], ["pooled"], kernel_shape=[k, k], strides=[k, k]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("ReduceMean", ["flat", "axes"], ["mu"], keepdims=1),
        helper.make_node("Sub", ["flat", "mu"], ["centred"]),
        helper.make_node("LpNormalization", ["centred"], ["embedding"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, input_size, input_size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", dim])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    from brandguard.vision.bundle import ModelCard, write_bundle

    dest = tmp_path_factory.mktemp("tiny_bundle")
    card = ModelCard(name="tiny-image-test", architecture="avgpool8x8+centre+l2", input_size=64,
                     embedding_dim=192, sha256="0" * 64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    write_bundle(dest, make_tiny_onnx(), card)
    return dest


