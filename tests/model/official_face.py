"""Test-only reference: PuLID's `get_id_embedding` face path as the official code runs it.

Re-typed step by step in the official code's own structure (a BGR image, insightface 0.7.3's `SCRFD.detect`,
`FaceAnalysis.get`, `norm_crop` and `get_feat`; facexlib 0.3.0's `RetinaFace.detect_faces`, PriorBox,
`decode`, `py_cpu_nms` through torchvision's NMS kernel, `FaceRestoreHelper.get_face_landmarks_5` and
`align_warp_face`; torchvision 0.15's tensor `normalize`/`resize`), on whatever nets it is given. It shares
no code with `pulid_server.model.common.face`, so the parity tests compare two independent implementations.
`official_parity.py` runs it against the mirrored official sources themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from math import ceil
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

FFHQ_TEMPLATE = np.array(
    [
        [192.98138, 239.94708],
        [318.90277, 240.1936],
        [256.63416, 314.01935],
        [201.26117, 371.41043],
        [313.08905, 371.15118],
    ]
)
ARCFACE_DST = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)
RETINA_CFG = {"min_sizes": [[16, 32], [64, 128], [256, 512]], "steps": [8, 16, 32], "variance": [0.1, 0.2]}
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class OfficialResult:
    crop: np.ndarray  # RGB uint8 (the official keeps it BGR)
    parse: torch.Tensor  # the white/gray face_features_image
    id_cond: torch.Tensor
    taps: list[torch.Tensor]


# ---------------------------------------------------------------- pulid/utils.py


def resize_numpy_image_long(image: np.ndarray, resize_long_edge: int = 1024) -> np.ndarray:
    h, w = image.shape[:2]
    if max(h, w) <= resize_long_edge:
        return image
    k = resize_long_edge / max(h, w)
    h = int(h * k)
    w = int(w * k)
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_LANCZOS4)


# ---------------------------------------------------------------- insightface 0.7.3


def scrfd_detect(session: Any, img: np.ndarray, det_thresh: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    input_size = (640, 640)
    im_ratio = float(img.shape[0]) / img.shape[1]
    model_ratio = float(input_size[1]) / input_size[0]
    if im_ratio > model_ratio:
        new_height = input_size[1]
        new_width = int(new_height / im_ratio)
    else:
        new_width = input_size[0]
        new_height = int(new_width * im_ratio)
    det_scale = float(new_height) / img.shape[0]
    resized_img = cv2.resize(img, (new_width, new_height))
    det_img = np.zeros((input_size[1], input_size[0], 3), dtype=np.uint8)
    det_img[:new_height, :new_width, :] = resized_img

    blob = cv2.dnn.blobFromImage(det_img, 1.0 / 128.0, (640, 640), (127.5, 127.5, 127.5), swapRB=True)
    input_name = session.get_inputs()[0].name
    net_outs = session.run([o.name for o in session.get_outputs()], {input_name: blob})
    scores_list, bboxes_list, kpss_list = [], [], []
    for idx, stride in enumerate([8, 16, 32]):
        scores = net_outs[idx]
        bbox_preds = net_outs[idx + 3] * stride
        kps_preds = net_outs[idx + 6] * stride
        height, width = blob.shape[2] // stride, blob.shape[3] // stride
        anchor_centers = np.stack(np.mgrid[:height, :width][::-1], axis=-1).astype(np.float32)
        anchor_centers = (anchor_centers * stride).reshape((-1, 2))
        anchor_centers = np.stack([anchor_centers] * 2, axis=1).reshape((-1, 2))
        pos_inds = np.where(scores >= det_thresh)[0]
        bboxes = np.stack(
            [
                anchor_centers[:, 0] - bbox_preds[:, 0],
                anchor_centers[:, 1] - bbox_preds[:, 1],
                anchor_centers[:, 0] + bbox_preds[:, 2],
                anchor_centers[:, 1] + bbox_preds[:, 3],
            ],
            axis=-1,
        )
        scores_list.append(scores[pos_inds])
        bboxes_list.append(bboxes[pos_inds])
        preds = []
        for i in range(0, kps_preds.shape[1], 2):
            preds.append(anchor_centers[:, i % 2] + kps_preds[:, i])
            preds.append(anchor_centers[:, i % 2 + 1] + kps_preds[:, i + 1])
        kpss = np.stack(preds, axis=-1).reshape((-1, 5, 2))
        kpss_list.append(kpss[pos_inds])

    scores = np.vstack(scores_list)
    order = scores.ravel().argsort()[::-1]
    bboxes = np.vstack(bboxes_list) / det_scale
    kpss = np.vstack(kpss_list) / det_scale
    pre_det = np.hstack((bboxes, scores)).astype(np.float32, copy=False)[order, :]
    keep = insightface_nms(pre_det, 0.4)
    return pre_det[keep, :], kpss[order, :, :][keep, :, :]


def insightface_nms(dets: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2, scores = dets[:, 0], dets[:, 1], dets[:, 2], dets[:, 3], dets[:, 4]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        w = np.maximum(0.0, xx2 - xx1 + 1)
        h = np.maximum(0.0, yy2 - yy1 + 1)
        inter = w * h
        ovr = inter / (areas[i] + areas[order[1:]] - inter)
        inds = np.where(ovr <= thresh)[0]
        order = order[inds + 1]
    return keep


def norm_crop(img: np.ndarray, landmark: np.ndarray) -> np.ndarray:
    from skimage import transform as trans

    dst = ARCFACE_DST * 1.0
    dst[:, 0] += 0
    tform = trans.SimilarityTransform.from_estimate(landmark, dst)  # `tform.estimate` before skimage 0.26
    return cv2.warpAffine(img, tform.params[0:2, :], (112, 112), borderValue=0.0)


def get_feat(session: Any, img: np.ndarray) -> np.ndarray:
    blob = cv2.dnn.blobFromImages([img], 1.0 / 127.5, (112, 112), (127.5, 127.5, 127.5), swapRB=True)
    return np.asarray(session.run(None, {session.get_inputs()[0].name: blob})[0])


def face_analysis_get(det_session: Any, rec_session: Any, img: np.ndarray) -> list[dict[str, Any]]:
    bboxes, kpss = scrfd_detect(det_session, img)
    faces = []
    for i in range(bboxes.shape[0]):
        face = {"bbox": bboxes[i, 0:4], "kps": kpss[i], "det_score": bboxes[i, 4]}
        face["embedding"] = get_feat(rec_session, norm_crop(img, face["kps"])).flatten()
        faces.append(face)
    return faces


# ---------------------------------------------------------------- facexlib 0.3.0 (+ torchvision's NMS kernel)


def prior_box(image_size: tuple[int, int]) -> torch.Tensor:
    anchors: list[float] = []
    feature_maps = [[ceil(image_size[0] / step), ceil(image_size[1] / step)] for step in RETINA_CFG["steps"]]
    for k, f in enumerate(feature_maps):
        for i, j in product(range(f[0]), range(f[1])):
            for min_size in RETINA_CFG["min_sizes"][k]:
                s_kx = min_size / image_size[1]
                s_ky = min_size / image_size[0]
                cx = (j + 0.5) * RETINA_CFG["steps"][k] / image_size[1]
                cy = (i + 0.5) * RETINA_CFG["steps"][k] / image_size[0]
                anchors += [cx, cy, s_kx, s_ky]
    return torch.Tensor(anchors).view(-1, 4)


def torchvision_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """torchvision/csrc/ops/cpu/nms_kernel.cpp, scalar by scalar in float32."""
    x1, y1, x2, y2 = (boxes[:, c].astype(np.float32) for c in range(4))
    areas = (x2 - x1) * (y2 - y1)
    order = torch.sort(torch.from_numpy(scores.astype(np.float32)), stable=True, descending=True).indices
    suppressed = [False] * len(boxes)
    keep = []
    for _i in range(len(boxes)):
        i = int(order[_i])
        if suppressed[i]:
            continue
        keep.append(i)
        for _j in range(_i + 1, len(boxes)):
            j = int(order[_j])
            if suppressed[j]:
                continue
            w = max(np.float32(0), min(x2[i], x2[j]) - max(x1[i], x1[j]))
            h = max(np.float32(0), min(y2[i], y2[j]) - max(y1[i], y1[j]))
            inter = w * h
            with np.errstate(divide="ignore", invalid="ignore"):
                ovr = inter / (areas[i] + areas[j] - inter)
            if float(ovr) > iou_threshold:
                suppressed[j] = True
    return keep


@torch.no_grad()
def retinaface_detect_faces(net: nn.Module, image: np.ndarray, conf_threshold: float) -> np.ndarray:
    device = next(net.parameters()).device
    img = torch.from_numpy(image.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0).to(device)
    img = img - torch.tensor([[[[104.0]], [[117.0]], [[123.0]]]], device=device)
    height, width = img.shape[2:]
    scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
    scale1 = torch.tensor([width, height] * 5, dtype=torch.float32, device=device)
    loc, conf, landmarks = net(img)
    priors = prior_box((height, width)).to(device)
    var = RETINA_CFG["variance"]

    loc = loc.squeeze(0)
    boxes = torch.cat(
        (priors[:, :2] + loc[:, :2] * var[0] * priors[:, 2:], priors[:, 2:] * torch.exp(loc[:, 2:] * var[1])),
        1,
    )
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    boxes = (boxes * scale / 1).cpu().numpy()
    scores = conf.squeeze(0).cpu().numpy()[:, 1]
    pre = landmarks.squeeze(0)
    landms = torch.cat(
        [priors[:, :2] + pre[:, 2 * k : 2 * k + 2] * var[0] * priors[:, 2:] for k in range(5)], 1
    )
    landms = (landms * scale1 / 1).cpu().numpy()

    inds = np.where(scores > conf_threshold)[0]
    boxes, landms, scores = boxes[inds], landms[inds], scores[inds]
    order = scores.argsort()[::-1]
    boxes, landms, scores = boxes[order], landms[order], scores[order]
    bounding_boxes = np.hstack((boxes, scores[:, np.newaxis])).astype(np.float32, copy=False)
    keep = torchvision_nms(bounding_boxes[:, :4], bounding_boxes[:, 4], 0.4)
    return np.concatenate((bounding_boxes[keep, :], landms[keep]), axis=1)


def face_restore_helper_crop(detect_faces: Any, input_img: np.ndarray, face_size: int) -> np.ndarray | None:
    """read_image + get_face_landmarks_5(only_center_face=True) + align_warp_face; the first cropped face."""
    face_template = FFHQ_TEMPLATE * (face_size / 512.0)
    bboxes = detect_faces(input_img, 0.97) * 1
    all_landmarks_5, det_faces = [], []
    for bbox in bboxes:
        all_landmarks_5.append(np.array([[bbox[i], bbox[i + 1]] for i in range(5, 15, 2)]))
        det_faces.append(bbox[0:5])
    if len(det_faces) == 0:
        return None
    h, w, _ = input_img.shape
    center = np.array([w / 2, h / 2])
    center_dist = [
        np.linalg.norm(np.array([(f[0] + f[2]) / 2, (f[1] + f[3]) / 2]) - center) for f in det_faces
    ]
    landmark = all_landmarks_5[center_dist.index(min(center_dist))]
    affine_matrix = cv2.estimateAffinePartial2D(landmark, face_template, method=cv2.LMEDS)[0]
    return cv2.warpAffine(
        input_img,
        affine_matrix,
        (face_size, face_size),
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(135, 133, 132),
    )


# ---------------------------------------------------------------- pulid/pipeline.py get_id_embedding


def normalize(tensor: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """torchvision 0.15 `normalize` on a tensor."""
    tensor = tensor.clone()
    m = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
    return tensor.sub_(m).div_(s)


@torch.no_grad()
def get_id_embedding(
    image: Image.Image,
    det_session: Any,
    rec_session: Any,
    align_detect_faces: Any,
    parser: nn.Module,
    eva: nn.Module,
    face_size: int = 512,
) -> OfficialResult:
    """app.py's resize, then get_id_embedding up to id_cond (the IDEncoder input). Nets: ours (same layers)."""
    image_rgb = resize_numpy_image_long(np.array(image.convert("RGB")), 1024)
    image_bgr = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    face_info = face_analysis_get(det_session, rec_session, image_bgr)
    id_ante_embedding = None
    if len(face_info) > 0:
        face = sorted(face_info, key=lambda x: (x["bbox"][2] - x["bbox"][0]) * (x["bbox"][3] - x["bbox"][1]))[
            -1
        ]
        id_ante_embedding = face["embedding"]

    align_face = face_restore_helper_crop(align_detect_faces, image_bgr, face_size)
    if align_face is None:
        raise RuntimeError("facexlib align face fail")
    if id_ante_embedding is None:
        id_ante_embedding = get_feat(rec_session, align_face)
    emb = torch.from_numpy(id_ante_embedding)
    if emb.ndim == 1:
        emb = emb.unsqueeze(0)

    device = next(parser.parameters()).device
    rgb = cv2.cvtColor(align_face, cv2.COLOR_BGR2RGB)
    inp = torch.from_numpy(rgb.transpose(2, 0, 1)).float().unsqueeze(0) / 255.0
    inp = inp.to(device)
    parsing_out = parser(normalize(inp, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))  # facexlib's [0]
    parsing_out = parsing_out.argmax(dim=1, keepdim=True)
    bg = sum(parsing_out == i for i in [0, 16, 18, 7, 8, 9, 14, 15]).bool()
    gray = (0.299 * inp[:, 0:1] + 0.587 * inp[:, 1:2] + 0.114 * inp[:, 2:3]).repeat(1, 3, 1, 1)
    face_features_image = torch.where(bg, torch.ones_like(inp), gray)

    size = eva.cfg.image_size
    x = F.interpolate(
        face_features_image, size=[size, size], mode="bicubic", align_corners=False, antialias=False
    )
    x = normalize(x, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    id_cond_vit, id_vit_hidden = eva(x)
    id_cond_vit = torch.div(id_cond_vit, torch.norm(id_cond_vit, 2, 1, True))
    id_cond = torch.cat([emb.to(id_cond_vit.device), id_cond_vit], dim=-1)
    return OfficialResult(align_face[:, :, ::-1], face_features_image, id_cond, id_vit_hidden)
