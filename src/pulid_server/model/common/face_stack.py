"""The face stack every family loads: official weights, or the tiny preset's stand-ins.

Both return the `FaceFeatures` and a key naming its weights and device, which keys the shared feature
cache (`face_cache.FACE_FEATURES`): two families that load the same stack share analyses.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pulid_server.model.common.eva_clip import EvaConfig, EVAVisionTransformer
from pulid_server.model.common.face import (
    ArcFaceRecognizer,
    CascadeFaceDetector,
    FaceFeatures,
    RetinaFaceDetector,
    ScrfdDetector,
    onnx_session,
)
from pulid_server.model.common.face_nets import BiSeNet, RetinaFace
from pulid_server.model.common.weights import load_strict, read_checkpoint, sub_dict

TINY_EVA = EvaConfig(
    image_size=28,
    patch_size=14,
    width=32,
    depth=6,
    heads=2,
    mlp_hidden=85,
    output_dim=32,
    pt_grid=2,
    tap_every=1,
)
TINY_FACE_SIZE = 64
TINY_PARSER_WIDTH = 8


def build_tiny_face(device: torch.device, seed: int = 0) -> tuple[FaceFeatures, str]:
    """Seeded toy EVA and BiSeNet, the tiny ArcFace ONNX model and scikit-image's LBP face cascade."""
    from pulid_server.model.common.tiny_onnx import tiny_arcface

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        eva = EVAVisionTransformer(TINY_EVA).eval()
        torch.nn.init.normal_(eva.pos_embed, std=0.02)
        torch.nn.init.normal_(eva.cls_token, std=0.02)
        parser = BiSeNet(19, width=TINY_PARSER_WIDTH).eval()
    detector = CascadeFaceDetector()
    face = FaceFeatures(
        embed_detector=detector,
        recognizer=ArcFaceRecognizer(onnx_session(tiny_arcface(seed), device)),
        align_detector=detector,
        parser=parser.to(device),
        eva=eva.to(device),
        face_size=TINY_FACE_SIZE,
    )
    return face, f"tiny:{seed}:{device}"


def build_official_face(files: dict[str, Path], device: torch.device) -> tuple[FaceFeatures, str]:
    """EVA02-CLIP-L-336 (`visual.*`), RetinaFace-R50 and BiSeNet (fp32), SCRFD + glintr100 (onnxruntime)."""
    with torch.device("meta"):
        eva = EVAVisionTransformer(EvaConfig())
        retina, parser = RetinaFace(), BiSeNet(19)
    load_strict(
        eva, sub_dict(read_checkpoint(files["eva_clip"]), "visual."), f"{files['eva_clip']} (visual.*)"
    )
    load_strict(retina, read_checkpoint(files["retinaface"]), str(files["retinaface"]))
    load_strict(parser, read_checkpoint(files["bisenet"]), str(files["bisenet"]))
    face = FaceFeatures(
        embed_detector=ScrfdDetector(onnx_session(files["scrfd"], device)),
        recognizer=ArcFaceRecognizer(onnx_session(files["glintr100"], device)),
        align_detector=RetinaFaceDetector(retina.to(device, torch.float32).eval()),
        parser=parser.to(device, torch.float32).eval(),
        eva=eva.to(device, torch.float32).eval(),
        face_size=512,
    )
    names = ("eva_clip", "scrfd", "glintr100", "retinaface", "bisenet")
    return face, "official:" + "|".join(str(files[n].resolve()) for n in names) + f":{device}"


def face_modules(face: FaceFeatures) -> list[torch.nn.Module]:
    """The torch modules of a face stack (what CPU offload moves; the ONNX sessions stay put)."""
    nets = [face.eva, face.parser, getattr(face.align_detector, "net", None)]
    return [m for m in nets if isinstance(m, torch.nn.Module)]
