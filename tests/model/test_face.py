"""The insightface path on small generated ONNX models with the real signatures, and the tiny preset."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from torch import nn

from pulid_server.model.common.face import (
    ARCFACE_TEMPLATE,
    ArcFaceRecognizer,
    CascadeFaceDetector,
    FaceFeatures,
    ScrfdDetector,
    onnx_session,
)
from pulid_server.model.common.tiny_onnx import tiny_arcface, tiny_scrfd
from pulid_server.model.sdxl.pipeline import PulidPipeline

CPU = torch.device("cpu")


def test_scrfd_decode_finds_the_bright_square_with_keypoints() -> None:
    detector = ScrfdDetector(onnx_session(tiny_scrfd(), CPU))
    assert (detector.fmc, detector.num_anchors, detector.use_kps) == (3, 2, True)
    image = np.zeros((480, 320, 3), dtype=np.uint8)  # portrait: letterboxed to 426x640 (scale 4/3)
    image[192:288, 96:192] = 255
    faces = detector.detect(image)
    assert faces
    scale = 640 / 480
    for f in faces:
        cx, cy = (f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2
        assert 96 <= cx <= 192 and 192 <= cy <= 288
        side = (f.bbox[2] - f.bbox[0]) * scale  # box is centre +- 2 strides in network pixels
        stride = side / 4
        assert any(abs(stride - s) < 1e-3 for s in (8, 16, 32))
        np.testing.assert_allclose(f.kps[0], [cx - stride / scale, cy - stride / scale], atol=1e-3)
        np.testing.assert_allclose(f.kps[2], [cx, cy], atol=1e-3)
    assert faces[0].score >= faces[-1].score
    assert detector.detect(np.zeros((200, 300, 3), dtype=np.uint8)) == []


def test_arcface_signature_and_norm_crop_alignment() -> None:
    rec = ArcFaceRecognizer(onnx_session(tiny_arcface(), CPU))
    rng = np.random.default_rng(0)
    crop = rng.integers(0, 255, (112, 112, 3), dtype=np.uint8)
    emb = rec.get_feat(crop)
    assert emb.shape == (512,) and emb.dtype == np.float32
    assert not np.allclose(emb, rec.get_feat(255 - crop))
    # norm_crop maps the 5 landmarks onto the ArcFace template: a dot at each landmark lands there.
    image = np.zeros((300, 400, 3), dtype=np.uint8)
    kps = ARCFACE_TEMPLATE * 2.0 + np.array([120.0, 40.0], dtype=np.float32)
    x, y = (round(v) for v in kps[2])
    image[y - 2 : y + 3, x - 2 : x + 3] = 255
    aligned = rec.norm_crop(image, kps)
    assert aligned.shape == (112, 112, 3)
    ty, tx = np.unravel_index(aligned[:, :, 0].argmax(), (112, 112))
    assert abs(tx - ARCFACE_TEMPLATE[2, 0]) <= 1.5 and abs(ty - ARCFACE_TEMPLATE[2, 1]) <= 1.5


def test_cascade_detector_finds_the_astronaut_face_only() -> None:
    det = CascadeFaceDetector()
    faces = det.detect(data.astronaut())
    main = max(faces, key=lambda f: f.area)
    cx, cy = (main.bbox[0] + main.bbox[2]) / 2, (main.bbox[1] + main.bbox[3]) / 2
    assert 200 < cx < 270 and 80 < cy < 150  # her face, not the helmet or the flag
    assert det.detect(data.coffee()) == []
    assert det.detect(np.full((200, 200, 3), 90, dtype=np.uint8)) == []


class FixedParser(nn.Module):
    """Test double: left half labelled background (0), right half skin (1)."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the pipeline a device and dtype to read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
        logits[:, 0, :, : x.shape[3] // 2] = 1
        logits[:, 1, :, x.shape[3] // 2 :] = 1
        return logits


def test_parse_whitens_background_and_grays_the_face(tiny: PulidPipeline) -> None:
    face = FaceFeatures(
        tiny.face.embed_detector,
        tiny.face.recognizer,
        tiny.face.align_detector,
        FixedParser(),
        tiny.face.eva,
        8,
    )
    aligned = np.zeros((8, 8, 3), dtype=np.uint8)
    aligned[..., 0], aligned[..., 1], aligned[..., 2] = 200, 100, 50
    out = face.parse(aligned)
    assert torch.all(out[:, :, :, :4] == 1.0)
    gray = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    torch.testing.assert_close(out[:, :, :, 4:], torch.full((1, 3, 8, 4), gray), atol=1e-6, rtol=0)


def test_face_features_shapes_on_astronaut(tiny: PulidPipeline) -> None:
    id_cond, taps = tiny.face(Image.fromarray(data.astronaut()))
    eva = tiny.face.eva.cfg
    assert id_cond.shape == (1, 512 + eva.output_dim)
    torch.testing.assert_close(id_cond[:, 512:].norm(dim=-1), torch.ones(1))  # EVA part is L2-normalised
    assert [t.shape for t in taps] == [(1, eva.grid**2 + 1, eva.width)] * 5
    with pytest.raises(LookupError):
        tiny.face(Image.fromarray(data.coffee()))
