"""Run the official face path itself (mirrored sources) against ours and against tests/model/official_face.py.

    .venv/bin/python -m tests.model.official_parity [--mirrors /work/.mirror] [--old path/to/face.py]

Needs git mirrors of ToTheBeginning/PuLID, xinntao/facexlib (0.3.0) and deepinsight/insightface (0.7.3 is
exported from commit 668e8d47), laid out as `{mirrors}/{owner}+{name}/repo` (the `fetch` tool's layout).
Not part of the suite (the mirrors are not in CI). It loads `pulid/pipeline.py`, `pulid/utils.py`,
facexlib's `retinaface.py`, `retinaface_utils.py`, `face_restoration_helper.py` and insightface's
`scrfd.py`, `arcface_onnx.py`, `face_align.py`, `face_analysis.py` unchanged and calls the official
`PuLIDPipeline.get_id_embedding` on an object holding the test nets. Stand-ins replace only what cannot be
installed here: torchvision (`ops.nms` is its CPU kernel re-typed, `normalize`/`resize` are 0.15's tensor
semantics), eva_clip, torchsde, and the model downloads. `--old` also measures another version of our
`face.py` (e.g. main's) against the official code. Prints one line per case: max crop difference in grey
levels, % of crop pixels that differ, max parse difference (grey levels), and max relative differences of
the ArcFace embedding, the EVA feature and the EVA taps.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import subprocess
import sys
import tempfile
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data

from pulid_server.model.common import face as ours_module
from pulid_server.model.common.eva_clip import OPENAI_MEAN, OPENAI_STD
from pulid_server.model.common.face import DetectedFace
from pulid_server.model.common.tiny_onnx import tiny_arcface
from tests.model import official_face as reference
from tests.model.official_face import torchvision_nms
from tests.model.seeded_faces import seeded_parts, seeded_retinaface, seeded_scrfd
from tests.model.test_face_parity import ASTRONAUT_KPS

CPU = torch.device("cpu")
INSIGHTFACE_073 = "668e8d47"


# ---------------------------------------------------------------- loading the official sources


def _export(mirrors: Path, repo: str, rev: str, path: str, dest: Path) -> None:
    tar = subprocess.run(
        ["git", "--git-dir", str(mirrors / repo / "repo"), "archive", rev, path],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)


def _module(name: str, path: Path | None = None, **attrs: object) -> types.ModuleType:
    """A package shell (its __init__ is not run) or a stand-in module, registered in sys.modules."""
    mod = types.ModuleType(name)
    mod.__path__ = [str(path)] if path is not None else []  # type: ignore[attr-defined]
    mod.__dict__.update(attrs)
    sys.modules[name] = mod
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, mod)
    return mod


def _tv_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    return torch.tensor(torchvision_nms(boxes.numpy(), scores.numpy(), iou_threshold), dtype=torch.int64)


def _tv_resize(img: torch.Tensor, size: Any, interpolation: Any = None, **_: Any) -> torch.Tensor:
    """torchvision 0.15 `resize` on a float tensor: an int size is the short side; no antialias by default."""
    h, w = img.shape[-2:]
    if isinstance(size, int):
        size = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    return F.interpolate(img, size=list(size), mode=interpolation.value, align_corners=False, antialias=False)


def load_official(mirrors: Path, workdir: Path) -> dict[str, types.ModuleType]:
    src = workdir / "src"
    src.mkdir(parents=True)
    _export(mirrors, "xinntao+facexlib", "HEAD", "facexlib", src)
    _export(mirrors, "deepinsight+insightface", INSIGHTFACE_073, "python-package/insightface", src)
    _export(mirrors, "ToTheBeginning+PuLID", "HEAD", "pulid", src)
    ins = src / "python-package" / "insightface"
    import diffusers  # before the torchvision stand-in: they probe for the real one
    import transformers

    for name in ("DPMSolverMultistepScheduler", "StableDiffusionXLPipeline", "UNet2DConditionModel"):
        getattr(diffusers, name)
    _ = transformers.PretrainedConfig

    modes = types.SimpleNamespace(BICUBIC=types.SimpleNamespace(value="bicubic"))
    _module("torchvision")
    _module("torchvision.ops", nms=_tv_nms)
    _module("torchvision.transforms", InterpolationMode=modes)
    _module("torchvision.transforms.functional", normalize=reference.normalize, resize=_tv_resize)
    _module("torchvision.models", resnet50=None)
    _module("torchvision.models._utils", IntermediateLayerGetter=None)
    _module("torchvision.utils", make_grid=None)
    _module("torchsde")
    _module("eva_clip", create_model_and_transforms=None)
    _module("eva_clip.constants", OPENAI_DATASET_MEAN=OPENAI_MEAN, OPENAI_DATASET_STD=OPENAI_STD)
    _module("insightface", ins)
    _module("insightface.model_zoo", ins / "model_zoo")
    _module("insightface.model_zoo.model_zoo", get_model=None)
    _module("insightface.app", ins / "app", FaceAnalysis=None)
    _module("insightface.utils", ins / "utils", DEFAULT_MP_NAME="antelopev2", ensure_available=None)
    _module("facexlib", src / "facexlib")
    _module("facexlib.detection", src / "facexlib" / "detection", init_detection_model=None)
    _module("facexlib.parsing", src / "facexlib" / "parsing", init_parsing_model=None)
    _module("facexlib.utils", src / "facexlib" / "utils")
    _module("pulid", src / "pulid")
    _module("pulid.encoders", IDEncoder=None)
    names = [
        "insightface.model_zoo.scrfd",
        "insightface.model_zoo.arcface_onnx",
        "insightface.app.face_analysis",
        "facexlib.detection.retinaface",
        "facexlib.utils.face_restoration_helper",
        "pulid.utils",
        "pulid.pipeline",
    ]
    mods = {n.rsplit(".", 1)[-1]: importlib.import_module(n) for n in names}
    sys.modules["insightface.app"].FaceAnalysis = mods["face_analysis"].FaceAnalysis
    return mods


# ---------------------------------------------------------------- the official pipeline object


class _Parse(torch.nn.Module):
    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (self.net(x),)  # facexlib's BiSeNet returns (out, out16, out32)


class _Eva(torch.nn.Module):
    def __init__(self, eva: Any) -> None:
        super().__init__()
        self.eva, self.image_size = eva, eva.cfg.image_size

    def forward(self, x: torch.Tensor, **_: Any) -> Any:
        return self.eva(x)


class _IdAdapter(torch.nn.Module):
    """Records the IDEncoder inputs (id_cond, EVA taps): what get_id_embedding computes."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[torch.Tensor, list[torch.Tensor]]] = []

    def forward(self, id_cond: torch.Tensor, hidden: list[torch.Tensor]) -> torch.Tensor:
        self.calls.append((id_cond, hidden))
        return id_cond


class Official:
    def __init__(
        self, mods: dict[str, types.ModuleType], nets: tuple[Any, ...], align: Any, tmp: Path
    ) -> None:
        import onnxruntime

        scrfd, arcface, retina, parser, eva = nets
        self.mods = mods
        arc_path = tmp / "arcface.onnx"
        arc_path.write_bytes(arcface)
        helper = mods["face_restoration_helper"]
        helper.init_detection_model = lambda *a, **k: align if align is not None else self.retinaface(retina)
        helper.init_parsing_model = lambda *a, **k: None
        pipe = mods["pipeline"].PuLIDPipeline.__new__(mods["pipeline"].PuLIDPipeline)
        pipe.device = "cpu"
        pipe.face_helper = helper.FaceRestoreHelper(
            upscale_factor=1, face_size=512, crop_ratio=(1, 1), det_model="retinaface_resnet50", device="cpu"
        )
        pipe.face_helper.face_parse = _Parse(parser)
        pipe.clip_vision_model = _Eva(eva)
        pipe.eva_transform_mean, pipe.eva_transform_std = OPENAI_MEAN, OPENAI_STD
        app = mods["face_analysis"].FaceAnalysis.__new__(mods["face_analysis"].FaceAnalysis)
        session = onnxruntime.InferenceSession(scrfd, providers=["CPUExecutionProvider"])
        app.det_model = mods["scrfd"].SCRFD(session=session)
        app.models = {
            "detection": app.det_model,
            "recognition": mods["arcface_onnx"].ArcFaceONNX(str(arc_path)),
        }
        with contextlib.redirect_stdout(io.StringIO()):
            app.prepare(ctx_id=0, det_size=(640, 640))
        pipe.app = app
        pipe.handler_ante = mods["arcface_onnx"].ArcFaceONNX(str(arc_path))
        pipe.id_adapter = _IdAdapter()
        pipe.debug_img_list = []
        self.pipe = pipe

    def retinaface(self, net: torch.nn.Module) -> Any:
        """facexlib's RetinaFace (its transform, detect_faces, PriorBox, decode) around our network."""
        retinaface = self.mods["retinaface"]

        class Retina(retinaface.RetinaFace):  # type: ignore[misc, name-defined]
            def __init__(self) -> None:  # the state facexlib's __init__ sets, without building its network
                torch.nn.Module.__init__(self)
                self.device, self.half_inference, self.net = CPU, False, net
                self.cfg = retinaface.generate_config("resnet50")
                self.resize, self.scale, self.scale1 = 1.0, None, None
                self.target_size, self.max_size = 1600, 2150
                self.mean_tensor = torch.tensor([[[[104.0]], [[117.0]], [[123.0]]]])

            def forward(self, x: torch.Tensor) -> Any:
                return self.net(x)

        return Retina()

    def __call__(self, image: Image.Image) -> dict[str, Any]:
        parsed: list[torch.Tensor] = []
        self.mods["pipeline"].tensor2img = lambda t, **k: parsed.append(t.clone())
        self.pipe.face_helper.clean_all()
        self.pipe.id_adapter.calls.clear()
        rgb = self.mods["utils"].resize_numpy_image_long(np.array(image.convert("RGB")), 1024)
        with contextlib.redirect_stdout(io.StringIO()):
            self.pipe.get_id_embedding(rgb)
        id_cond, taps = self.pipe.id_adapter.calls[0]
        crop = self.pipe.face_helper.cropped_faces[0][:, :, ::-1]
        return {"crop": crop, "parse": parsed[0], "id_cond": id_cond, "taps": taps}


# ---------------------------------------------------------------- cases


class Planted:
    """The given landmark sets as a detector: ours (`detect`) and facexlib's (`detect_faces`)."""

    def __init__(self, kps: np.ndarray) -> None:
        k = kps.astype(np.float32)
        self.row = np.concatenate([k.min(0) - 20, k.max(0) + 20, [0.999], k.reshape(-1)]).astype(np.float32)

    def detect(self, rgb: np.ndarray) -> list[DetectedFace]:
        return [DetectedFace(self.row[:4], self.row[5:].reshape(5, 2), 0.999)]

    def detect_faces(self, image: np.ndarray, conf_threshold: float = 0.8, **_: Any) -> np.ndarray:
        return self.row[None].copy()


def photos() -> Iterator[tuple[str, Image.Image]]:
    astronaut = Image.fromarray(data.astronaut())
    for size in ((200, 200), (300, 300), (512, 512), (800, 800), (1024, 1024), (1500, 1500), (2000, 2000)):
        yield f"astronaut {size[0]}x{size[1]}", astronaut.resize(size, Image.Resampling.BICUBIC)
    yield "astronaut 1500x700", astronaut.resize((1500, 700), Image.Resampling.BICUBIC)
    yield "astronaut 300x900", astronaut.resize((300, 900), Image.Resampling.BICUBIC)
    for name in ("coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "camera"):
        yield name, Image.fromarray(getattr(data, name)())
    yield "motorcycle 1482x1000", Image.fromarray(data.stereo_motorcycle()[0]).resize((1482, 1000))


def ours(module: Any, nets: tuple[Any, ...], align: Any, image: Image.Image) -> dict[str, Any]:
    scrfd, arcface, retina, parser, eva = nets
    faces = module.FaceFeatures(
        module.ScrfdDetector(module.onnx_session(scrfd, CPU)),
        module.ArcFaceRecognizer(module.onnx_session(arcface, CPU)),
        align if align is not None else module.RetinaFaceDetector(retina),
        parser,
        eva,
        512,
    )
    if hasattr(faces, "analyze"):
        a = faces.analyze(image)
        return {"crop": a.aligned, "parse": a.features, "id_cond": a.id_cond, "taps": a.taps}
    rgb = module.resize_long_edge(image)  # main's face.py before #13
    found = faces.embed_detector.detect(rgb)
    crop = faces.align(rgb, max(found, key=lambda f: f.area) if found else None)
    id_cond, taps = faces(image)
    return {"crop": crop, "parse": faces.parse(crop), "id_cond": id_cond, "taps": taps}


def compare(a: dict[str, Any], b: dict[str, Any]) -> str:
    if a["crop"].shape != b["crop"].shape:
        return "crop size differs"
    d = np.abs(a["crop"].astype(int) - b["crop"].astype(int))

    def rel(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x - y).abs().max() / y.abs().max())

    taps = max(rel(x, y) for x, y in zip(a["taps"], b["taps"]))
    return (
        f"crop {d.max():3d} ({(d.max(-1) > 0).mean() * 100:5.1f}% px)  "
        f"parse {float((a['parse'] - b['parse']).abs().max()) * 255:6.2f}  "
        f"arcface {rel(a['id_cond'][:, :512], b['id_cond'][:, :512]):.1e}  "
        f"eva {rel(a['id_cond'][:, 512:], b['id_cond'][:, 512:]):.1e}  taps {taps:.1e}"
    )


def as_dict(r: reference.OfficialResult) -> dict[str, Any]:
    return {"crop": r.crop, "parse": r.parse, "id_cond": r.id_cond, "taps": r.taps}


def run_case(
    label: str, official: Official, nets: tuple[Any, ...], align: Any, image: Image.Image, old: Any
) -> None:
    truth = official(image)
    scrfd, arcface, retina, parser, eva = nets
    detect = (
        align.detect_faces
        if align is not None
        else lambda img, t: reference.retinaface_detect_faces(retina, img, t)
    )
    ref = reference.get_id_embedding(
        image,
        ours_module.onnx_session(scrfd, CPU),
        ours_module.onnx_session(arcface, CPU),
        detect,
        parser,
        eva,
    )
    print(f"{label:44s} ours:      {compare(ours(ours_module, nets, align, image), truth)}")
    print(f"{'':44s} reference: {compare(as_dict(ref), truth)}")
    if old is not None:
        print(f"{'':44s} old:       {compare(ours(old, nets, old_align(align, image), image), truth)}")


def old_align(align: Planted | None, image: Image.Image) -> Any:
    """main's face.py detected on a copy upscaled to a 512 short side: plant the landmarks at that scale."""
    if align is None:
        return None
    short = min(image.size) * min(1.0, 1024 / max(image.size))
    return Planted(align.row[5:].reshape(5, 2) * (512.0 / short if short < 512 else 1.0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirrors", type=Path, default=Path("/work/.mirror"))
    parser.add_argument("--old", type=Path, help="another face.py to measure against the official code")
    parser.add_argument("--trials", type=int, default=4, help="noisy landmark draws per size and noise level")
    args = parser.parse_args()
    old = None
    if args.old:
        spec = importlib.util.spec_from_file_location("old_face", args.old)
        assert spec is not None and spec.loader is not None
        old = sys.modules["old_face"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(old)
    with tempfile.TemporaryDirectory() as tmp:
        mods = load_official(args.mirrors, Path(tmp))
        for seed, noise in ((0, 1.0), (2, 0.3)):
            nets = (
                seeded_scrfd(seed, noise),
                tiny_arcface(seed),
                seeded_retinaface(seed, noise),
                *seeded_parts(seed),
            )
            official = Official(mods, nets, None, Path(tmp))
            for name, image in photos():
                with contextlib.suppress(RuntimeError, LookupError):  # no alignment face: both raise
                    run_case(f"seeded {seed} noise {noise} {name}", official, nets, None, image, old)
        nets = (seeded_scrfd(0, 0.3), tiny_arcface(0), None, *seeded_parts(0))
        rng = np.random.default_rng(0)
        astronaut = Image.fromarray(data.astronaut())
        for width in (200, 512, 1024, 2000):
            image = astronaut.resize((width, width), Image.Resampling.BICUBIC)
            scale = min(width, 1024) / 512
            for sigma in (0.0, 1.0, 2.0, 4.0, 8.0):
                for trial in range(args.trials):
                    planted = Planted(ASTRONAUT_KPS * scale + rng.normal(0.0, sigma, ASTRONAUT_KPS.shape))
                    official = Official(mods, nets, planted, Path(tmp))
                    run_case(
                        f"astronaut {width} landmarks +-{sigma} px #{trial}",
                        official,
                        nets,
                        planted,
                        image,
                        old,
                    )


if __name__ == "__main__":
    main()
