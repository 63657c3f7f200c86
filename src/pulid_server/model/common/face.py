"""Face analysis for PuLID: ArcFace embedding, FFHQ-aligned crop, BiSeNet parsing, EVA-CLIP features.

Reference: `pulid/pipeline.py::get_id_embedding` (insightface antelopev2 + facexlib). Choices:

* insightface is re-implemented here on onnxruntime (SCRFD decode + `norm_crop`, ~150 lines) instead of
  depending on the `insightface` package: that package pulls in albumentations and opencv, needs a C++
  build on some platforms, and we only use 2 of its 5 models. The maths follows `scrfd.py`,
  `arcface_onnx.py` and `face_align.py` (MIT); skimage's SimilarityTransform is the one insightface uses.
* OpenCV is replaced by torch: `cv2.resize`/`cv2.warpAffine` with INTER_LINEAR are bilinear without
  antialiasing, which `F.interpolate(antialias=False)` / `grid_sample` reproduce up to uint8 rounding.
* facexlib keeps the face closest to the image centre, insightface the largest one, so with several
  people the two halves of the embedding can describe different people. We keep the largest face and pick
  the alignment detection that overlaps it most (identical to the reference when there is one face).
* FFHQ alignment uses a least-squares similarity (skimage) instead of `cv2.estimateAffinePartial2D(LMEDS)`;
  with 5 clean landmarks both give nearly the same matrix.

Detectors are a small protocol, so the tiny preset can plug in a real classical detector
(`CascadeFaceDetector`, scikit-image's LBP frontal-face cascade) while running everything else unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pulid_server.model.common.eva_clip import EVAVisionTransformer
from pulid_server.model.common.face_nets import RETINA_MEAN_BGR, BiSeNet, RetinaFace, retina_decode

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
    ],
    dtype=np.float32,
)
FFHQ_BORDER_RGB = (132.0, 133.0, 135.0)  # facexlib's borderValue (135,133,132) is BGR
PARSING_BG_LABELS = (0, 16, 18, 7, 8, 9, 14, 15)  # background, cloth, hat, ears, earring, neck, necklace
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DetectedFace:
    bbox: np.ndarray  # x1, y1, x2, y2
    kps: np.ndarray  # 5x2: left eye, right eye, nose, left mouth, right mouth
    score: float

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


class FaceDetector(Protocol):
    def detect(self, rgb: np.ndarray) -> list[DetectedFace]: ...


# ---------------------------------------------------------------- image ops (OpenCV semantics)


def resize_linear(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """cv2.resize(..., INTER_LINEAR) on uint8 RGB: bilinear, half-pixel centres, no antialias."""
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False, antialias=False)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def warp_affine(
    rgb: np.ndarray, matrix: np.ndarray, size: int, border: tuple[float, float, float]
) -> np.ndarray:
    """cv2.warpAffine(INTER_LINEAR, BORDER_CONSTANT): dst(x, y) = src(M^-1 [x, y, 1])."""
    h, w = rgb.shape[:2]
    full = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)[:2]
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    src = inv @ np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    gx = 2.0 * src[0] / max(w - 1, 1) - 1.0
    gy = 2.0 * src[1] / max(h - 1, 1) - 1.0
    grid = torch.from_numpy(np.stack([gx, gy], axis=-1).reshape(1, size, size, 2)).float()
    img = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    ones = torch.ones(1, 1, h, w)
    sampled = F.grid_sample(
        torch.cat([img, ones], 1), grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    color, weight = sampled[:, :3], sampled[:, 3:]
    out = color + (1.0 - weight) * torch.tensor(border).view(1, 3, 1, 1)
    return out[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from skimage.transform import SimilarityTransform

    return np.asarray(SimilarityTransform.from_estimate(src, dst).params[:2], dtype=np.float64)


def resize_long_edge(image: Image.Image, max_side: int = 1024) -> np.ndarray:
    """PuLID's resize_numpy_image_long: downscale only (PIL Lanczos stands in for cv2 LANCZOS4)."""
    image = image.convert("RGB")
    w, h = image.size
    if max(w, h) > max_side:
        k = max_side / max(w, h)
        image = image.resize((int(w * k), int(h * k)), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8).copy()


def _nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Greedy NMS with the +1 pixel areas used by both insightface and facexlib. dets: [N,5] sorted."""
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
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


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
        canvas[:new_h, :new_w] = resize_linear(rgb, new_w, new_h)
        blob = ((canvas.astype(np.float32) - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outs = self.session.run(self.output_names, {self.input_name: blob})  # type: ignore[attr-defined]
        scores, boxes, kpss = self._decode([np.asarray(o) for o in outs])
        if len(scores) == 0:
            return []
        boxes, kpss = boxes / det_scale, kpss / det_scale
        order = scores.argsort()[::-1]
        dets = np.hstack([boxes, scores[:, None]])[order]
        keep = _nms(dets, self.nms)
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
        return warp_affine(rgb, similarity(kps, ARCFACE_TEMPLATE), 112, (0.0, 0.0, 0.0))

    def get_feat(self, crop_rgb: np.ndarray) -> np.ndarray:
        if crop_rgb.shape[:2] != (112, 112):  # cv2.dnn.blobFromImages resizes bilinearly
            crop_rgb = resize_linear(crop_rgb, 112, 112)
        blob = ((crop_rgb.astype(np.float32) - 127.5) / 127.5).transpose(2, 0, 1)[None]
        out = self.session.run([self.output_name], {self.input_name: blob})[0]  # type: ignore[attr-defined]
        return np.asarray(out, dtype=np.float32).reshape(-1)


# ---------------------------------------------------------------- facexlib (torch)


class RetinaFaceDetector:
    """facexlib `detect_faces(img, 0.97)` after `read_image` (upscales images whose short side < 512)."""

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
        keep_mask = scores > self.threshold
        boxes, scores, pts = boxes[keep_mask], scores[keep_mask], pts[keep_mask]
        order = scores.argsort()[::-1]
        dets = np.hstack([boxes, scores[:, None]])[order].astype(np.float32)
        pts = pts[order]
        keep = _nms(dets, self.nms)
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
    """Reference image -> (id_cond [1, 512 + eva_dim], 5 EVA taps). Raises LookupError without a face."""

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

    @torch.no_grad()
    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, list[torch.Tensor]]:
        rgb = resize_long_edge(image)
        faces = self.embed_detector.detect(rgb)
        main = max(faces, key=lambda f: f.area) if faces else None
        aligned = self.align(rgb, main)
        if main is not None:
            arc = self.recognizer.get_feat(self.recognizer.norm_crop(rgb, main.kps))
        else:  # reference fallback: ArcFace on the FFHQ crop
            arc = self.recognizer.get_feat(aligned)
        device = next(self.eva.parameters()).device
        face01 = self.parse(aligned)
        eva_feat, taps = self.eva.encode(face01.to(device))
        id_cond = torch.cat([torch.from_numpy(arc)[None].to(device), eva_feat], dim=-1)
        return id_cond, taps

    def align(self, rgb: np.ndarray, main: DetectedFace | None) -> np.ndarray:
        """facexlib FaceRestoreHelper: upscale to short side >= 512, detect, FFHQ warp to face_size."""
        h, w = rgb.shape[:2]
        f = 512.0 / min(h, w) if min(h, w) < 512 else 1.0
        big = resize_linear(rgb, round(w * f), round(h * f)) if f != 1.0 else rgb
        faces = self.align_detector.detect(big)
        if not faces:
            raise LookupError("the face alignment detector found no face")
        if main is not None:
            face = max(faces, key=lambda c: _iou(c.bbox, main.bbox * f))
        else:  # facexlib's only_center_face
            center = np.array([big.shape[1] / 2, big.shape[0] / 2])
            face = min(faces, key=lambda c: float(np.linalg.norm((c.bbox[:2] + c.bbox[2:4]) / 2 - center)))
        template = FFHQ_TEMPLATE_512 * (self.face_size / 512.0)
        return warp_affine(big, similarity(face.kps, template), self.face_size, FFHQ_BORDER_RGB)

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
