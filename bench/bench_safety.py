"""The safety checker's cost as a ratio to the generation it follows.

1. Measured, tiny presets (CPU): screening one request's images in the worker (`ImageScreen.screen`: the
   checker's preprocessing and one batched forward pass, then the mask) / generating them (tiny PuLID
   pipeline, 256x256, 4 steps, CFG 1.2), for 1 and 4 images; best of interleaved runs.
2. Counted, full size: FLOPs of each checker at its released architecture (sd: CLIP ViT-L/14 at 224 +
   projection; vit: ViT-B/16 at 224) / FLOPs of the SDXL-Lightning generation it follows at 1024x1024 (4
   UNet steps on the CFG batch of 2, the fp32 VAE decode, both text encoders), counted with torch's
   FlopCounterMode on the meta device (no weights, no compute). PuLID's ID path (face models, EVA, ID
   attention: ~1 % of the UNet, docs/model.md) is left out of the generation, which makes the ratio an
   upper bound.
   Beside it, the one cost FLOPs miss: the checker's preprocessing of a 1024x1024 image (PIL, CPU).
   The time ratio at full size needs a GPU (bench/gpu_fullsize.py's generation); not measured here.

Run: .venv/bin/python bench/bench_safety.py [--repeats 7] [--no-full-size]
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_model import best_time  # noqa: E402
from pulid_server.model import get_family  # noqa: E402
from pulid_server.model.safety.checkers import image_processor_class  # noqa: E402
from pulid_server.model.sdxl import GenerationRequest  # noqa: E402
from pulid_server.worker.safety import ImageScreen  # noqa: E402

SIZE, STEPS = 256, 4


def tiny_ratios(repeats: int) -> list[str]:
    pipe = get_family("sdxl").load("tiny", "cpu", None)
    checkers = {name: get_family(f"safety-{name}").load("tiny", "cpu", None) for name in ("sd", "vit")}
    face = Image.fromarray(data.astronaut())
    buf = io.BytesIO()
    face.save(buf, "PNG")
    rows = []
    for n in (1, 4):
        request = GenerationRequest(
            reference_images=[(buf.getvalue(), face)],
            prompt="a portrait photo",
            num_images=n,
            width=SIZE,
            height=SIZE,
            num_inference_steps=STEPS,
            seed=0,
        )
        images = pipe.generate(request)  # warm-up; fills the ID cache, as a repeat face would
        timers: dict[str, Callable[[], object]] = {"generate": lambda r=request: pipe.generate(r)}
        for name, checker in checkers.items():
            timers[name] = lambda c=checker, i=images: ImageScreen(c, c.default_threshold).screen(i)
        runs: dict[str, list[float]] = {k: [] for k in timers}
        for _ in range(repeats):  # interleaved, so that load drift hits all alike
            for k, fn in timers.items():
                runs[k].append(best_time(fn, 1))
        best = {k: min(v) for k, v in runs.items()}
        for name in checkers:
            rows.append(
                f"| {name} (tiny) | {n} | {best[name] * 1e3:.1f} | {best['generate'] * 1e3:.0f} | "
                f"{best[name] / best['generate']:.4f} |"
            )
    return rows


def full_size_models(device: str) -> dict[str, Any]:
    """The released architectures with random weights: CompVis's checker config and Falconsai's ViT."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, ViTConfig, ViTForImageClassification

    clip_l14 = {
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_attention_heads": 16,
        "num_hidden_layers": 24,
        "patch_size": 14,
        "image_size": 224,
    }
    vit_b16 = ViTConfig(num_labels=2, id2label={0: "normal", 1: "nsfw"}, label2id={"normal": 0, "nsfw": 1})
    with torch.device(device):
        return {
            "sd": StableDiffusionSafetyChecker(CLIPConfig(vision_config=clip_l14, projection_dim=768)).eval(),
            "vit": ViTForImageClassification(vit_b16).eval(),
        }


def generation_flops() -> float:
    """SDXL-Lightning at 1024x1024: 4 UNet steps on the CFG batch, VAE decode, both text encoders."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.gpu_fullsize import STEPS as LIGHTNING_STEPS
    from bench.gpu_fullsize import build

    pipe = build("meta", torch.float32)
    with torch.no_grad(), FlopCounterMode(display=False) as unet:
        pipe.unet(
            torch.zeros(2, 4, 128, 128, device="meta"),
            torch.tensor([999.0, 999.0], device="meta"),
            encoder_hidden_states=torch.zeros(2, 77, 2048, device="meta"),
            added_cond_kwargs={
                "text_embeds": torch.zeros(2, 1280, device="meta"),
                "time_ids": torch.zeros(2, 6, device="meta"),
            },
        )
    with torch.no_grad(), FlopCounterMode(display=False) as rest:
        pipe.vae.decode(torch.zeros(1, 4, 128, 128, device="meta"))
        ids = torch.zeros(2, 77, dtype=torch.long, device="meta")
        pipe.text_encoder(ids, output_hidden_states=True)
        pipe.text_encoder_2(ids, output_hidden_states=True)
    return float(LIGHTNING_STEPS * unet.get_total_flops() + rest.get_total_flops())


def checker_flops(models: dict[str, Any]) -> dict[str, float]:
    from torch.utils.flop_counter import FlopCounterMode

    pixels = torch.zeros(1, 3, 224, 224, device="meta")
    flops = {}
    with torch.no_grad():
        with FlopCounterMode(display=False) as sd:
            m = models["sd"]
            m.visual_projection(m.vision_model(pixels).pooler_output) @ m.concept_embeds.T
        with FlopCounterMode(display=False) as vit:
            models["vit"](pixel_values=pixels)
        flops["sd"], flops["vit"] = float(sd.get_total_flops()), float(vit.get_total_flops())
    return flops


def preprocess_ms(repeats: int) -> dict[str, float]:
    """The released preprocessing (CLIP: resize shortest side + crop 224; ViT: resize 224) of one 1024^2 image."""
    image = Image.fromarray(data.astronaut()).resize((1024, 1024))
    processors = {
        "sd": image_processor_class("CLIPImageProcessor")(),  # CLIP's defaults are CompVis's (224)
        "vit": image_processor_class("ViTImageProcessor")(image_mean=[0.5] * 3, image_std=[0.5] * 3),
    }
    return {
        name: 1e3 * best_time(lambda p=p: p(images=[image], return_tensors="pt"), repeats)
        for name, p in processors.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-full-size", action="store_true", help="skip parts 2 and 3 (CPU minutes)")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"1. tiny presets, CPU, {SIZE}x{SIZE}, {STEPS} steps, best of {args.repeats} interleaved runs")
    print()
    print("| checker | images | screen ms | generate ms | screen / generate |")
    print("|---|---|---|---|---|")
    print("\n".join(tiny_ratios(args.repeats)))
    if args.no_full_size:
        return
    gen = generation_flops()
    flops = checker_flops(full_size_models("meta"))
    prep = preprocess_ms(args.repeats)
    print()
    print(
        f"2. full size: the SDXL-Lightning generation at 1024x1024 is {gen / 1e12:.1f} TFLOP per image "
        "(4 UNet steps x CFG batch 2, VAE decode, text encoders; FlopCounterMode on the meta device)"
    )
    print()
    print("| checker | GFLOP per image | checker / generation FLOPs | preprocess ms per 1024^2 image (CPU) |")
    print("|---|---|---|---|")
    for name, arch in (("sd", "CLIP ViT-L/14-224"), ("vit", "ViT-B/16-224")):
        print(f"| {name} ({arch}) | {flops[name] / 1e9:.0f} | {flops[name] / gen:.4f} | {prep[name]:.1f} |")


if __name__ == "__main__":
    main()
