"""Small ONNX models with the insightface signatures, generated with the `onnx` package.

* `tiny_arcface` (used by the tiny preset at runtime, so the tiny preset needs `onnx`): 112x112 RGB ->
  512-d, a seeded random conv net. Runs through the same `ArcFaceRecognizer` as glintr100.
* `tiny_scrfd` (used by tests): the 9-output SCRFD signature (3 strides x scores/bboxes/kps, 2 anchors).
  Its score is a sigmoid of the local mean brightness, so a bright square on black is "a face" there;
  box and keypoint distances are constants. That makes the SCRFD decode checkable with known answers.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _model(nodes: list[Any], inputs: list[Any], outputs: list[Any], inits: list[Any]) -> bytes:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def tiny_arcface(seed: int = 0, channels: int = 8) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = (rng.standard_normal((channels, 3, 8, 8)) * 0.05).astype(np.float32)
    w2 = (rng.standard_normal((channels, 512)) * 0.5).astype(np.float32)
    b2 = (rng.standard_normal(512) * 0.1).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input.1", "w1"], ["c1"], strides=[8, 8]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("GlobalAveragePool", ["r1"], ["p1"]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Gemm", ["f1", "w2", "b2"], ["683"]),
    ]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, 112, 112])]
    outputs = [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["None", 512])]
    inits = [
        numpy_helper.from_array(w1, "w1"),
        numpy_helper.from_array(w2, "w2"),
        numpy_helper.from_array(b2, "b2"),
    ]
    return _model(nodes, inputs, outputs, inits)


def tiny_scrfd(
    box_distance: float = 2.0, kps_offsets: tuple[float, ...] = (-1, -1, 1, -1, 0, 0, -1, 1, 1, 1)
) -> bytes:
    """Distances are in units of the stride, as SCRFD predicts them."""
    from onnx import TensorProto, helper, numpy_helper

    nodes, outputs, inits = [], [], []
    # Gray = mean over RGB of the normalised blob; a white pixel is (255-127.5)/128 ~ 1.
    inits.append(numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, dtype=np.float32), "gray_w"))
    nodes.append(helper.make_node("Conv", ["input.1", "gray_w"], ["gray"]))
    groups: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    for stride in (8, 16, 32):
        pooled = f"pool{stride}"
        nodes.append(
            helper.make_node(
                "AveragePool", ["gray"], [pooled], kernel_shape=[stride, stride], strides=[stride, stride]
            )
        )
        for kind, per_anchor in (("score", 1), ("bbox", 4), ("kps", 10)):
            out_c = 2 * per_anchor
            if kind == "score":  # sigmoid(20 * (mean - 0.5)): high only inside bright regions
                w = np.full((out_c, 1, 1, 1), 20.0, dtype=np.float32)
                b = np.full(out_c, -10.0, dtype=np.float32)
            else:
                w = np.zeros((out_c, 1, 1, 1), dtype=np.float32)
                values = [box_distance] * 4 if kind == "bbox" else list(kps_offsets)
                b = np.array(values * 2, dtype=np.float32)
            name = f"{kind}{stride}"
            inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
            conv = f"{name}_conv"
            nodes.append(helper.make_node("Conv", [pooled, f"{name}_w", f"{name}_b"], [conv]))
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [conv], [conv + "_s"]))
                conv += "_s"
            nodes.append(helper.make_node("Transpose", [conv], [conv + "_t"], perm=[0, 2, 3, 1]))
            shape_name = f"{name}_shape"
            inits.append(numpy_helper.from_array(np.array([-1, per_anchor], dtype=np.int64), shape_name))
            nodes.append(helper.make_node("Reshape", [conv + "_t", shape_name], [name]))
            groups[kind].append(name)
            outputs.append((kind, name, per_anchor))
    ordered = [o for kind in ("score", "bbox", "kps") for o in outputs if o[0] == kind]
    value_infos = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k]) for _, n, k in ordered]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])]
    return _model(nodes, inputs, value_infos, inits)
