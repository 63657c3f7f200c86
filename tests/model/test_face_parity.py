"""Our face path against the official one (tests/model/official_face.py) on bundled photos.

Real photos (scikit-image's astronaut, coffee, chelsea) at 200 to 2000 px, with seeded nets whose detections
are face-shaped (several candidates per image, landmark scatter set by a noise level), and with the
astronaut's own 5 landmarks under Gaussian noise. All nets are seeded (the official weights are not
available offline); the same nets run on both sides, so what is compared is everything around them:
resizes, detection decoding, NMS, face choice, alignment, crops, parsing mask, ArcFace and EVA inputs.
The bar is equality: the same OpenCV and numpy operations in the same order give the same bits.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from pulid_server.model.common.face import (
    ArcFaceRecognizer,
    DetectedFace,
    FaceAnalysis,
    FaceFeatures,
    RetinaFaceDetector,
    ScrfdDetector,
    center_face,
    largest_face,
    nms_plus_one,
    nms_torchvision,
    onnx_session,
    resize_long_edge,
)
from pulid_server.model.common.tiny_onnx import tiny_arcface
from tests.model import official_face as official
from tests.model.seeded_faces import seeded_parts, seeded_retinaface, seeded_scrfd

CPU = torch.device("cpu")
# The astronaut's eyes, nose tip and mouth corners in the 512 px photo (read off the image).
ASTRONAUT_KPS = np.array([[201.7, 100.7], [246.7, 102.7], [225.0, 121.7], [205.0, 141.7], [243.3, 141.7]])


@cache
def nets(
    seed: int, kps_noise: float
) -> tuple[bytes, bytes, torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    parser, eva = seeded_parts(seed)
    return seeded_scrfd(seed, kps_noise), tiny_arcface(seed), seeded_retinaface(seed, kps_noise), parser, eva


def photo(name: str, size: tuple[int, int] | None) -> Image.Image:
    image = Image.fromarray(getattr(data, name)())
    return image if size is None else image.resize(size, Image.Resampling.BICUBIC)


class Planted:
    """Given landmark sets as a detector, for both sides (ours: DetectedFace, facexlib: [N, 15] rows)."""

    def __init__(self, *kps: np.ndarray) -> None:
        self.rows = np.stack(
            [
                np.concatenate([k.min(0) - 20, k.max(0) + 20, [0.999], k.reshape(-1)]).astype(np.float32)
                for k in kps
            ]
        )

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return [DetectedFace(r[:4], r[5:].reshape(5, 2), float(r[4])) for r in self.rows]

    def detect_faces(self, image: np.ndarray, conf_threshold: float) -> np.ndarray:
        return self.rows.copy()


def face_features(seed: int, kps_noise: float, align: Planted | None = None) -> FaceFeatures:
    scrfd, arcface, retina, parser, eva = nets(seed, kps_noise)
    return FaceFeatures(
        ScrfdDetector(onnx_session(scrfd, CPU)),
        ArcFaceRecognizer(onnx_session(arcface, CPU)),
        align or RetinaFaceDetector(retina),  # type: ignore[arg-type]
        parser,  # type: ignore[arg-type]
        eva,  # type: ignore[arg-type]
        face_size=512,
    )


def ours_and_official(
    image: Image.Image, seed: int, kps_noise: float, align: Planted | None = None
) -> tuple[FaceAnalysis, official.OfficialResult]:
    ours = face_features(seed, kps_noise, align).analyze(image)
    scrfd, arcface, retina, parser, eva = nets(seed, kps_noise)
    detect_faces: Callable[[np.ndarray, float], np.ndarray] = (
        align.detect_faces if align else lambda img, t: official.retinaface_detect_faces(retina, img, t)
    )
    ref = official.get_id_embedding(
        image, onnx_session(scrfd, CPU), onnx_session(arcface, CPU), detect_faces, parser, eva, face_size=512
    )
    return ours, ref


def assert_same(ours: FaceAnalysis, ref: official.OfficialResult) -> None:
    np.testing.assert_array_equal(ours.aligned, ref.crop)
    assert torch.equal(ours.features, ref.parse)
    assert torch.equal(ours.id_cond, ref.id_cond)
    assert len(ours.taps) == len(ref.taps) == 5
    assert all(torch.equal(a, b) for a, b in zip(ours.taps, ref.taps))


@pytest.mark.parametrize(
    ("name", "size", "seed", "kps_noise"),
    [
        ("astronaut", (200, 200), 0, 0.0),
        ("astronaut", (300, 900), 2, 1.0),
        ("astronaut", None, 0, 1.0),
        ("astronaut", (1500, 700), 0, 0.3),
        ("astronaut", (2000, 2000), 2, 1.0),
        ("coffee", None, 0, 1.0),
        ("chelsea", None, 0, 0.3),
    ],
)
def test_seeded_detectors_on_photos_match_the_official_path(
    name: str, size: tuple[int, int] | None, seed: int, kps_noise: float
) -> None:
    ours, ref = ours_and_official(photo(name, size), seed, kps_noise)
    assert_same(ours, ref)


def test_without_an_scrfd_face_arcface_runs_on_the_crop_on_both_sides() -> None:
    image = photo("rocket", None)
    scrfd = nets(0, 1.0)[0]
    assert ScrfdDetector(onnx_session(scrfd, CPU)).detect(np.asarray(image)) == []  # the official fallback
    ours, ref = ours_and_official(image, 0, 1.0)
    assert_same(ours, ref)


def test_no_alignment_face_fails_on_both_sides() -> None:
    image = photo("chelsea", None)  # seed 2's RetinaFace finds nothing on the cat
    with pytest.raises(LookupError):
        face_features(2, 0.3).analyze(image)
    scrfd, arcface, retina, parser, eva = nets(2, 0.3)
    with pytest.raises(RuntimeError, match="facexlib align face fail"):
        official.get_id_embedding(
            image,
            onnx_session(scrfd, CPU),
            onnx_session(arcface, CPU),
            lambda img, t: official.retinaface_detect_faces(retina, img, t),
            parser,
            eva,
        )


def test_seeded_detectors_see_several_faces() -> None:
    """So the comparisons above exercise NMS and both face choices, not a single obvious box."""
    scrfd, _, retina, _, _ = nets(0, 1.0)
    rgb = resize_long_edge(photo("astronaut", None))
    embed = ScrfdDetector(onnx_session(scrfd, CPU)).detect(rgb)
    align = RetinaFaceDetector(retina).detect(rgb)
    assert len(embed) > 3 and len(align) > 3
    assert largest_face(embed).bbox.tolist() != embed[0].bbox.tolist()
    assert center_face(align, *rgb.shape[:2]).bbox.tolist() != align[0].bbox.tolist()


@pytest.mark.parametrize("width", [200, 512, 1024, 2000])
def test_alignment_matches_facexlib_under_landmark_noise(width: int) -> None:
    """The astronaut's landmarks plus 0 to 8 px of noise. LMEDS fits on its own choice of points, so a
    least-squares similarity lands pixels away at these noise levels; OpenCV's estimator gives facexlib's crop."""
    from skimage.transform import SimilarityTransform

    image = photo("astronaut", (width, width))
    rgb = resize_long_edge(image)
    scale = rgb.shape[1] / 512  # the landmarks in the resized reference
    rng = np.random.default_rng(width)
    template = official.FFHQ_TEMPLATE
    worst_least_squares = 0.0
    for sigma in (0.0, 1.0, 2.0, 4.0, 8.0):
        for _ in range(3):
            kps = (ASTRONAUT_KPS * scale + rng.normal(0.0, sigma, ASTRONAUT_KPS.shape)).astype(np.float32)
            planted = Planted(kps)
            ours = face_features(0, 0.0, planted).align(rgb)
            ref = official.face_restore_helper_crop(planted.detect_faces, rgb[:, :, ::-1].copy(), 512)
            assert ref is not None
            np.testing.assert_array_equal(ours, ref[:, :, ::-1])
            lmeds = official.cv2.estimateAffinePartial2D(kps, template, method=official.cv2.LMEDS)[0]
            lsq = SimilarityTransform.from_estimate(kps, template).params[:2]
            corners = np.array([[0, 0, 1], [width, 0, 1], [0, width, 1], [width, width, 1]], dtype=float)
            worst_least_squares = max(worst_least_squares, float(np.abs(corners @ (lmeds - lsq).T).max()))
    assert worst_least_squares > 1.0


def test_two_faces_embedding_from_the_largest_crop_from_the_centre() -> None:
    """As the official code: ArcFace on the largest SCRFD face, the crop from the RetinaFace face nearest the
    centre, even when those are different people."""
    image = photo("astronaut", None)
    off_centre = ASTRONAUT_KPS.astype(np.float32)  # her face, upper left of centre
    centred = (ASTRONAUT_KPS - ASTRONAUT_KPS.mean(0)) * 0.5 + np.array([256.0, 260.0])  # a small one
    planted = Planted(off_centre, centred.astype(np.float32))
    ours, ref = ours_and_official(image, 2, 0.3, align=planted)
    assert_same(ours, ref)
    alone = face_features(2, 0.3, Planted(centred.astype(np.float32))).align(np.asarray(image))
    np.testing.assert_array_equal(ours.aligned, alone)


def test_nms_rules_differ_by_the_plus_one() -> None:
    """IoU 0.379 with plain areas, 0.419 with +1 areas: torchvision keeps both boxes, insightface one."""
    dets = np.array([[0, 0, 10, 10, 0.9], [4.5, 0, 14.5, 10, 0.8]], dtype=np.float32)
    assert nms_torchvision(dets, 0.4) == [0, 1]
    assert nms_plus_one(dets, 0.4) == [0]


def test_nms_torchvision_matches_the_kernel_on_random_and_tied_boxes() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        xy = rng.uniform(0, 100, (60, 2))
        wh = rng.uniform(0, 40, (60, 2))
        wh[:5] = 0  # zero-area boxes: IoU 0/0 never suppresses
        scores = rng.choice([0.98, 0.985, 0.99], 60)  # ties: the sort is stable
        dets = np.hstack([xy, xy + wh, scores[:, None]]).astype(np.float32)
        assert nms_torchvision(dets, 0.4) == official.torchvision_nms(dets[:, :4], dets[:, 4], 0.4)


def test_face_choice_ties() -> None:
    box = np.array([10, 10, 30, 30], dtype=np.float32)
    a, b = (DetectedFace(box + d, np.zeros((5, 2), np.float32), 1.0) for d in (0.0, 40.0))
    assert largest_face([a, b]) is b  # a stable sort by area, then the last one
    assert center_face([a, b], 80, 80) is a  # the first of equally near faces


def test_resize_long_edge_is_the_official_downscale() -> None:
    image = photo("astronaut", (2000, 1999))
    out = resize_long_edge(image)
    assert out.shape == (1023, 1024, 3)  # sizes truncated, not rounded
    np.testing.assert_array_equal(out, official.resize_numpy_image_long(np.array(image), 1024))
    small = photo("astronaut", (300, 200))
    np.testing.assert_array_equal(resize_long_edge(small), np.array(small))  # never upscaled
