"""Seeded face nets for the parity tests: random weights, detections shaped like faces.

With seeded weights the detectors fire on arbitrary image content, which is what the post-processing needs to
be exercised: many overlapping boxes (NMS), several candidate faces (centre / largest choice), and landmark
sets whose scatter is set by `kps_noise` (the LMEDS alignment). Landmarks are a frontal layout (eyes, nose,
mouth corners) plus `kps_noise` times a random function of the image. Score biases are calibrated on the
astronaut photo so that about `candidates` anchors pass the detector's threshold before NMS (some seeds
saturate, so flat regions tie and far more pass: the tests use seeds that do not).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from skimage import data

from pulid_server.model.common.eva_clip import EVAVisionTransformer
from pulid_server.model.common.face_nets import RETINA_MEAN_BGR, BiSeNet, RetinaFace
from pulid_server.model.common.face_stack import TINY_EVA, TINY_PARSER_WIDTH
from pulid_server.model.common.tiny_onnx import _model

# Frontal 5-point layout in units of the box half-size, relative to the box centre.
FACE_LAYOUT = np.array([[-0.4, -0.2], [0.4, -0.2], [0.0, 0.15], [-0.3, 0.5], [0.3, 0.5]], dtype=np.float32)
RETINA_THRESHOLD_LOGIT = float(np.log(0.97 / 0.03))


def seeded_scrfd(seed: int, kps_noise: float, candidates: int = 40) -> bytes:
    """The 9-output SCRFD signature (strides 8/16/32, 2 anchors, kps) over a random 1x1 conv feature."""
    import onnxruntime as ort

    probe = _scrfd(seed, kps_noise, 0.0, sigmoid=False)
    session = ort.InferenceSession(probe, providers=["CPUExecutionProvider"])
    blob = cv2.dnn.blobFromImage(cv2.resize(data.astronaut(), (640, 640)), 1 / 128, (640, 640), (127.5,) * 3)
    logits = np.concatenate([np.asarray(o).reshape(-1) for o in session.run(None, {"input.1": blob})[:3]])
    return _scrfd(seed, kps_noise, -float(np.sort(logits)[-candidates]))


def _scrfd(seed: int, kps_noise: float, score_bias: float, sigmoid: bool = True, hidden: int = 8) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, outs = [], [], []
    layout = (FACE_LAYOUT * 2.0).reshape(-1)  # the box half-size is 2 strides
    for stride in (8, 16, 32):
        pooled, feat = f"pool{stride}", f"feat{stride}"
        w = (rng.standard_normal((hidden, 3, 1, 1)) * 0.5).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{feat}_w"))
        nodes += [
            helper.make_node(
                "AveragePool", ["input.1"], [pooled], kernel_shape=[stride] * 2, strides=[stride] * 2
            ),
            helper.make_node("Conv", [pooled, f"{feat}_w"], [feat + "_c"]),
            helper.make_node("Tanh", [feat + "_c"], [feat]),
        ]
        for kind, per_anchor, scale, bias in (
            ("score", 1, 1.0, np.full(1, score_bias)),
            ("bbox", 4, 0.3, np.full(4, 2.0)),
            ("kps", 10, kps_noise, layout),
        ):
            name, tail = f"{kind}{stride}", f"{kind}{stride}_c"
            w = (rng.standard_normal((2 * per_anchor, hidden, 1, 1)) * scale).astype(np.float32)
            b = np.tile(bias, 2).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
            nodes.append(helper.make_node("Conv", [feat, f"{name}_w", f"{name}_b"], [tail]))
            if kind == "score" and sigmoid:
                nodes.append(helper.make_node("Sigmoid", [tail], [tail + "_s"]))
                tail += "_s"
            shape = np.array([-1, per_anchor], dtype=np.int64)
            inits.append(numpy_helper.from_array(shape, f"{name}_shape"))
            nodes += [
                helper.make_node("Transpose", [tail], [tail + "_t"], perm=[0, 2, 3, 1]),
                helper.make_node("Reshape", [tail + "_t", f"{name}_shape"], [name]),
            ]
            outs.append((kind, name, per_anchor))
    ordered = [o for kind in ("score", "bbox", "kps") for o in outs if o[0] == kind]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", k]) for _, n, k in ordered]
    inputs = [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])]
    return _model(nodes, inputs, outputs, inits)


@torch.no_grad()
def seeded_retinaface(seed: int, kps_noise: float, width: int = 4, candidates: int = 40) -> RetinaFace:
    """facexlib's RetinaFace at toy width with re-drawn heads (gains suit its head inputs' RMS of ~0.17)."""
    torch.manual_seed(seed)
    net = RetinaFace(width).eval()
    layout = torch.from_numpy(FACE_LAYOUT * 5.0).reshape(-1)  # box half-size / (0.1 variance x anchor size)
    for heads, gain, bias in (
        (net.ClassHead, 12.0, torch.zeros(2)),
        (net.BboxHead, 3.0, torch.zeros(4)),
        (net.LandmarkHead, 6.0 * kps_noise, layout),
    ):
        for head in heads:
            conv = head.conv1x1
            conv.weight.normal_(0.0, gain / conv.in_channels**0.5)
            conv.bias.copy_(bias.repeat(2))
    bgr = torch.from_numpy(data.astronaut()[:, :, ::-1].copy()).permute(2, 0, 1)[None].float()
    conf = net(bgr - torch.tensor(RETINA_MEAN_BGR).view(1, 3, 1, 1))[1][0]
    margin = (conf[:, 1].log() - conf[:, 0].log()).sort().values[-candidates]
    for head in net.ClassHead:  # the face logit minus the background logit, per anchor
        head.conv1x1.bias[1::2] += RETINA_THRESHOLD_LOGIT - margin
    return net


def seeded_parts(seed: int) -> tuple[BiSeNet, EVAVisionTransformer]:
    """BiSeNet and the EVA tower at the tiny preset's sizes."""
    torch.manual_seed(seed)
    parser = BiSeNet(19, width=TINY_PARSER_WIDTH).eval()
    eva = EVAVisionTransformer(TINY_EVA).eval()
    torch.nn.init.normal_(eva.pos_embed, std=0.02)
    torch.nn.init.normal_(eva.cls_token, std=0.02)
    return parser, eva
