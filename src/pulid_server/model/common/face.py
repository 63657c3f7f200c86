"""Face analysis for PuLID: ArcFace embedding, FFHQ-aligned crop, BiSeNet parsing, EVA-CLIP features.

Spec: `pulid/pipeline.py::get_id_embedding` with insightface 0.7.3 (antelopev2) and facexlib 0.3.0, step by
step and with the same OpenCV calls, so crops and embeddings are the official ones bit for bit:

* reference: downscaled to a 1024 long edge with `cv2.resize(INTER_LANCZOS4)` (`resize_numpy_image_long`);
* insightface (`scrfd.py`, `face_analysis.py`): SCRFD on a 640 letterbox (`cv2.resize`, `cv2.dnn.blobFromImage`),
  greedy NMS with +1 pixel areas; PuLID keeps the largest face (a stable sort by area, last one); ArcFace on
  `norm_crop` (skimage similarity + `cv2.warpAffine` to 112) through `cv2.dnn.blobFromImages`;
* facexlib (`FaceRestoreHelper`, `retinaface.py`): RetinaFace on the image as given, score > 0.97,
  `torchvision.ops.nms` (no +1), the face nearest the image centre (`only_center_face=True`), FFHQ 5-point
  template, `cv2.estimateAffinePartial2D(LMEDS)` and `cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT)`.

With several people in a photo the two choices (largest, centre-most) can be different people: so they are in
the official code. We work in RGB where the official code converts to BGR: every OpenCV op used here is
per channel, and both blobs are taken with `swapRB=False` on RGB, which is what `swapRB=True` makes of BGR.
insightface is re-implemented on onnxruntime (~120 lines) instead of depending on the `insightface` package,
which pulls in a C++ build, albumentations and the non-headless OpenCV for the 2 of its 5 models we use.

Detectors are a small protocol, so the tiny preset can plug in a real classical detector
(`CascadeFaceDetector`, scikit-image's LBP frontal-face cascade) while running everything else unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
from PIL import Image

from pulid_server.model.common.eva_clip import EVAVisionTransformer
from pulid_server.model.common.face_nets import RETINA_MEAN_BGR, BiSeNet, RetinaFace, retina_decode

# insightface's `arcface_dst` (float32) and facexlib's FFHQ 512 template (float64), typed as they are there.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
FFHQ_TEMPLATE_512 = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)
FFHQ_BORDER_RGB = (132, 133, 135)  # facexlib's borderValue (135, 133, 132) is BGR
PARSING_BG_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)  # background, cloth, hat, ears, earring, neck, necklace
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DetectedFace:
    bbox: np.ndarray  # x1, y1, x2, y2 (float32, as the detectors return them)
    kps: np.ndarray  # 5x2 float32: left eye, right eye, nose, left mouth, right mouth
    score: float

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


@dataclass
class FaceAnalysis:
    """What one reference image gives: the official code's intermediate images and the encoder inputs."""

    aligned: np.ndarray  # FFHQ-aligned crop, RGB uint8 [S, S, 3]
    features: torch.Tensor  # the parsed crop: background white, face gray; [1, 3, S, S] in [0, 1]
    id_cond: torch.Tensor  # [1, 512 + eva_dim]: raw ArcFace embedding, L2-normalised EVA feature
    taps: list[torch.Tensor]  # the 5 EVA hidden states


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...


# ---------------------------------------------------------------- choices and geometry (official semantics)


def resize_long_edge(image: Image.Image, max_side: int = 1024) -> np.ndarray:
    """PuLID's `resize_numpy_image_long`: downscale only, cv2 Lanczos-4, sizes truncated."""
    rgb = np.array(image.convert("RGB"), dtype=np.uint8)
    h, w = rgb.shape[:2]
    if max(h, w) <= max_side:
        return rgb
    k = max_side / max(h, w)
    return cv2.resize(rgb, (int(w * k), int(h * k)), interpolation=cv2.INTER_LANCZOS4)


def largest_face(faces: list[DetectedFace]) -> DetectedFace:
    """PuLID: `sorted(faces, key=area)[-1]`, i.e. the last of equally large faces."""
    return max(reversed(faces), key=lambda f: f.area)


def center_face(faces: list[DetectedFace], height: int, width: int) -> DetectedFace:
    """facexlib `get_center_face`: the first face whose box centre is nearest the image centre."""
    center = np.array([width / 2, height / 2])

    def distance(f: DetectedFace) -> float:
        b = f.bbox
        return float(np.linalg.norm(np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2]) - center))

    return min(faces, key=distance)


def nms_plus_one(dets: np.ndarray, thresh: float) -> list[int]:
    """insightface SCRFD NMS: areas with +1 pixel, float32, keeps IoU <= thresh. dets: [N, 5] sorted."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def nms_torchvision(dets: np.ndarray, thresh: float) -> list[int]:
    """`torchvision.ops.nms` (CPU kernel), which facexlib's RetinaFace uses: plain areas in float32, a stable
    descending sort, and a box is dropped when its IoU with a kept one is > thresh (compared in double)."""
    x1, y1, x2, y2 = (c.astype(np.float32) for c in dets[:, :4].T)
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-dets[:, 4].astype(np.float32), kind="stable")
    keep: list[int] = []
    while order.size > 0:
        i, rest = int(order[0]), order[1:]
        keep.append(i)
        w = np.maximum(np.float32(0), np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(np.float32(0), np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        with np.errstate(divide="ignore", invalid="ignore"):
            ovr = inter / (areas[i] + areas[rest] - inter)
        order = rest[~(ovr.astype(np.float64) > thresh)]
    return keep


# ---------------------------------------------------------------- insightface (onnxruntime)


def onnx_session(model: str | Path | bytes, device: torch.device) -> object:
    import onnxruntime as ort

    providers = ["CPUExecutionProvider"]
    if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=providers)


class ScrfdDetector:
    """insightface SCRFD (`scrfd_10g_bnkps.onnx`): 640x640 letterbox, 3 strides x 2 anchors, kps."""

    def __init__(
        self, session: object, input_size: int = 640, threshold: float = 0.5, nms: float = 0.4
    ) -> None:
        self.session = session
        self.input_size = input_size
        self.threshold = threshold
        self.nms = nms
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]
        self.output_names = [o.name for o in session.get_outputs()]  # type: ignore[attr-defined]
        n = len(self.output_names)
        self.fmc, self.strides, self.num_anchors = (
            (3, [8, 16, 32], 2) if n in (6, 9) else (5, [8, 16, 32, 64, 128], 1)
        )
        self.use_kps = n in (9, 15)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        size = self.input_size
        h, w = rgb.shape[:2]
        if h / w > 1.0:
            new_h, new_w = size, int(size / (h / w))
        else:
            new_w, new_h = size, int(size * (h / w))
        det_scale = new_h / h
        canvas = np.zeros((size, size, 3), dtype=np.uint8)
        canvas[:new_h, :new_w] = cv2.resize(rgb, (new_w, new_h))
        blob = cv2.dnn.blobFromImage(canvas, 1.0 / 128.0, (size, size), (127.5, 127.5, 127.5), swapRB=False)
        outs = self.session.run(self.output_names, {self.input_name: blob})  # type: ignore[attr-defined]
        scores, boxes, kpss = self._decode([np.asarray(o) for o in outs])
        if len(scores) == 0:
            return []
        boxes, kpss = boxes / det_scale, kpss / det_scale
        order = scores.argsort()[::-1]
        dets = np.hstack([boxes, scores[:, None]])[order]
        keep = nms_plus_one(dets, self.nms)
        kpss = kpss[order][keep]
        return [DetectedFace(d[:4], k, float(d[4])) for d, k in zip(dets[keep], kpss)]

    def _decode(self, outs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if outs[0].ndim == 3:  # batched export: drop the batch axis
            outs = [o[0] for o in outs]
        all_scores, all_boxes, all_kps = [], [], []
        for idx, stride in enumerate(self.strides):
            scores = outs[idx].reshape(-1)
            boxes = outs[idx + self.fmc].reshape(-1, 4) * stride
            fh = fw = self.input_size // stride
            grid = np.mgrid[:fh, :fw][::-1]
            centers = (np.stack(list(grid), axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            centers = np.repeat(centers, self.num_anchors, axis=0)
            pos = np.where(scores >= self.threshold)[0]
            xyxy = np.hstack([centers - boxes[:, :2], centers + boxes[:, 2:]])
            all_scores.append(scores[pos])
            all_boxes.append(xyxy[pos])
            if self.use_kps:
                kps = outs[idx + self.fmc * 2].reshape(-1, 5, 2) * stride + centers[:, None, :]
                all_kps.append(kps[pos])
            else:
                all_kps.append(np.zeros((len(pos), 5, 2), dtype=np.float32))
        return np.concatenate(all_scores), np.concatenate(all_boxes), np.concatenate(all_kps)


class ArcFaceRecognizer:
    """insightface ArcFaceONNX (`glintr100.onnx`): 112x112 RGB, (x-127.5)/127.5 -> raw 512-d embedding."""

    def __init__(self, session: object) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name  # type: ignore[attr-defined]
        self.output_name = session.get_outputs()[0].name  # type: ignore[attr-defined]

    def norm_crop(self, rgb: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """`face_align.norm_crop`: skimage similarity onto the ArcFace template, warp to 112, black border."""
        from skimage.transform import SimilarityTransform

        fit = SimilarityTransform.from_estimate(kps, ARCFACE_TEMPLATE)
        # a failed fit (degenerate points) leaves insightface's `tform.params` NaN; warp with that as it does
        matrix = fit.params[0:2, :] if fit else np.full((2, 3), np.nan)
        return cv2.warpAffine(rgb, matrix, (112, 112), borderValue=0.0)

    def get_feat(self, crop_rgb: np.ndarray) -> np.ndarray:
        """`get_feat`: blobFromImages resizes other sizes (the fallback's 512 crop) to 112 bilinearly."""
        blob = cv2.dnn.blobFromImages(
            [crop_rgb], 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=False
        )
        out = self.session.run([self.output_name], {self.input_name: blob})[0]  # type: ignore[attr-defined]
        return np.asarray(out, dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------- facexlib (torch)


class RetinaFaceDetector:
    """facexlib `RetinaFace.detect_faces(img, 0.97)` on the image as given (`use_origin_size=True`)."""

    def __init__(self, net: RetinaFace, threshold: float = 0.97, nms: float = 0.4) -> None:
        self.net = net
        self.threshold = threshold
        self.nms = nms

    @torch.no_grad()
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        param = next(self.net.parameters())
        h, w = rgb.shape[:2]
        bgr = torch.from_numpy(rgb[:, :, ::-1].copy()).permute(2, 0, 1)[None].to(param.device, torch.float32)
        x = (bgr - torch.tensor(RETINA_MEAN_BGR, device=param.device).view(1, 3, 1, 1)).to(param.dtype)
        loc, conf, landm = self.net(x)
        boxes, scores, pts = retina_decode(loc.float(), conf.float(), landm.float(), h, w)
        above = scores > self.threshold
        boxes, scores, pts = boxes[above], scores[above], pts[above]
        order = scores.argsort()[::-1]
        dets = np.hstack([boxes[order], scores[order, None]]).astype(np.float32, copy=False)
        pts = pts[order]
        keep = nms_torchvision(dets, self.nms)
        return [DetectedFace(d[:4], p, float(d[4])) for d, p in zip(dets[keep], pts[keep])]


class CascadeFaceDetector:
    """Classical detector for the tiny preset: scikit-image's LBP frontal-face cascade (a real detector
    trained on faces). It gives boxes only, so the 5 landmarks are placed at fixed fractions of the box
    (mean frontal-face proportions). Faceless images (flat, gradients, landscapes) give no detection.
    """

    KPS_FRACTIONS = np.array(
        [[0.31, 0.40], [0.69, 0.40], [0.50, 0.58], [0.35, 0.76], [0.65, 0.76]], dtype=np.float32
    )

    def __init__(self, min_size: int = 24, min_neighbors: int = 4) -> None:
        from skimage import data, feature

        self.cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())
        self.min_size = min_size
        self.min_neighbors = min_neighbors

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        gray = (rgb.astype(np.float32) @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)) / 255.0
        h, w = gray.shape
        found = self.cascade.detect_multi_scale(
            img=gray,
            scale_factor=1.2,
            step_ratio=1,
            min_size=(self.min_size, self.min_size),
            max_size=(h, w),
            min_neighbor_number=self.min_neighbors,
        )
        faces = []
        for d in found:
            x, y, bw, bh = float(d["c"]), float(d["r"]), float(d["width"]), float(d["height"])
            kps = np.array([x, y], dtype=np.float32) + self.KPS_FRACTIONS * np.array(
                [bw, bh], dtype=np.float32
            )
            faces.append(DetectedFace(np.array([x, y, x + bw, y + bh], dtype=np.float32), kps, 1.0))
        return faces


# ---------------------------------------------------------------- the whole ID feature extraction


class FaceFeatures:
    """Reference image -> (id_cond [1, 512 + eva_dim], 5 EVA taps); `analyze` also gives the crop and the
    parsed face. Raises LookupError without a face."""

    def __init__(
        self,
        embed_detector: FaceDetector,
        recognizer: ArcFaceRecognizer,
        align_detector: FaceDetector,
        parser: BiSeNet,
        eva: EVAVisionTransformer,
        face_size: int = 512,
    ) -> None:
        self.embed_detector = embed_detector
        self.recognizer = recognizer
        self.align_detector = align_detector
        self.parser = parser
        self.eva = eva
        self.face_size = face_size

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, list[torch.Tensor]]:
        analysis = self.analyze(image)
        return analysis.id_cond, analysis.taps

    @torch.no_grad()
    def analyze(self, image: Image.Image) -> FaceAnalysis:
        rgb = resize_long_edge(image)
        faces = self.embed_detector.detect(rgb)
        aligned = self.align(rgb)
        if faces:
            arc = self.recognizer.get_feat(self.recognizer.norm_crop(rgb, largest_face(faces).kps))
        else:  # the official fallback: ArcFace on the FFHQ crop
            arc = self.recognizer.get_feat(aligned)
        device = next(self.eva.parameters()).device
        features = self.parse(aligned)
        eva_feat, taps = self.eva.encode(features.to(device))
        id_cond = torch.cat([torch.from_numpy(arc)[None].to(device), eva_feat], dim=-1)
        return FaceAnalysis(aligned, features, id_cond, taps)

    def align(self, rgb: np.ndarray) -> np.ndarray:
        """facexlib FaceRestoreHelper: detect, keep the centre face, warp onto the FFHQ template."""
        faces = self.align_detector.detect(rgb)
        if not faces:
            raise LookupError("the face alignment detector found no face")
        face = center_face(faces, *rgb.shape[:2])
        template = FFHQ_TEMPLATE_512 * (self.face_size / 512.0)
        matrix = cv2.estimateAffinePartial2D(face.kps, template, method=cv2.LMEDS)[0]
        if matrix is None:  # degenerate landmarks (facexlib would fail inside warpAffine)
            raise LookupError("the face landmarks do not define an alignment")
        size = (self.face_size, self.face_size)
        return cv2.warpAffine(rgb, matrix, size, borderMode=cv2.BORDER_CONSTANT, borderValue=FFHQ_BORDER_RGB)

    def parse(self, aligned: np.ndarray) -> torch.Tensor:
        """BiSeNet: background/cloth/hat/ears/neck -> white; the rest -> gray. [1,3,S,S] in [0,1]."""
        param = next(self.parser.parameters())
        x = torch.from_numpy(aligned).permute(2, 0, 1)[None].float().to(param.device) / 255.0
        mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
        labels = self.parser(((x - mean) / std).to(param.dtype)).argmax(dim=1, keepdim=True)
        bg = torch.zeros_like(labels, dtype=torch.bool)
        for label in PARSING_BG_LABELS:
            bg |= labels == label
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).repeat(1, 3, 1, 1)
        return torch.where(bg, torch.ones_like(x), gray)
