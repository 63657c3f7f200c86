"""Full-size PuLID-FLUX on one GPU with random weights (no downloads): seconds per image and peak memory
for bf16, CPU offload and int8 / fp8 weight-only transformers, at 1024x1024. Not part of bench/run_all.py.

What runs: our PulidFluxPipeline with FLUX.1-dev's transformer (11.9 B), T5-XXL (4.8 B) and CLIP-L
text encoders, the FLUX AE, IDFormer and the 20 ID cross-attentions, all at their real sizes with random
weights built on the GPU (bf16; AE fp32 with bf16 autocast), and the tiny face stack (face analysis is
once per reference image and cached; it is not what this measures). 20 steps (fal's default), guidance
4, ID cached after the first call; text encoded on every call. Peak = torch.cuda.max_memory_allocated
(what PyTorch holds; add ~0.5-1 GB for the CUDA context and onnxruntime). The images are noise.

Budget: ~4-8 minutes on one H100/H200 (building the random weights and the offload moves dominate);
`--deadline` skips what would not fit. Run: .venv/bin/python bench/gpu_flux.py [--modes bf16,offload,int8]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from typing import Any

SIZE = 1024
STEPS = 20


def build(mode: str) -> Any:
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from pulid_server.model.common.face_stack import build_tiny_face
    from pulid_server.model.common.tiny_text import tiny_t5_tokenizer, tiny_tokenizer
    from pulid_server.model.flux import MemoryOptions, configs
    from pulid_server.model.flux.id_former import IDFormer
    from pulid_server.model.flux.presets import Components, assemble, id_attention_modules

    cuda = torch.device("cuda")
    torch.manual_seed(0)
    with torch.device(cuda):  # random init on the GPU: minutes faster than on the CPU
        transformer = FluxTransformer2DModel(**configs.FLUX_DEV_TRANSFORMER).bfloat16()
        t5 = T5EncoderModel(
            T5Config(
                d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, feed_forward_proj="gated-gelu"
            )
        ).bfloat16()
        clip = CLIPTextModel(
            CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12)
        ).bfloat16()
        vae = AutoencoderKL(**configs.FLUX_DEV_VAE)
        id_former = IDFormer(**configs.ID_FORMER)
        id_attention = id_attention_modules(configs.FLUX_DEV_TRANSFORMER, configs.ID_ATTENTION)
    face, key = build_tiny_face(cuda)
    parts = Components(
        tiny_tokenizer(), clip, tiny_t5_tokenizer(), t5, transformer, vae, id_former, id_attention, face, key
    )
    quantize = next((q for q in ("int8", "fp8") if q in mode), "none")
    memory = MemoryOptions(offload="offload" in mode, quantize=quantize)  # type: ignore[arg-type]
    return assemble(parts, cuda, memory, "random-full-size")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--modes", default="bf16,offload,int8,fp8+offload")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--deadline", type=float, default=480.0)
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_flux: no CUDA GPU here; nothing was measured.", file=sys.stderr)
        return 0
    from PIL import Image
    from skimage import data

    from pulid_server.model.flux import FluxRequest

    image = Image.fromarray(data.astronaut())
    buf = io.BytesIO()
    image.save(buf, "PNG")
    began = time.monotonic()
    rows = []
    for mode in args.modes.split(","):
        if time.monotonic() - began > args.deadline:
            print(f"skipped {mode}: past --deadline", flush=True)
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        pipe = build(mode)
        loaded = torch.cuda.memory_allocated() / 2**30
        times = []
        for seed in range(args.repeats + 1):
            pipe._text_cache.clear()
            start = time.perf_counter()
            pipe.generate(
                FluxRequest(
                    reference_image=(buf.getvalue(), image),
                    prompt="a portrait photo",
                    width=SIZE,
                    height=SIZE,
                    num_inference_steps=STEPS,
                    seed=seed,
                )
            )
            torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peak = torch.cuda.max_memory_allocated() / 2**30
        rows.append((mode, min(times[1:]), times[0], loaded, peak))
        print(
            f"{mode}: {rows[-1][1]:.2f} s/image, resident after load {loaded:.1f} GiB, peak {peak:.1f} GiB",
            flush=True,
        )
        del pipe
    print()
    print(
        f"{torch.cuda.get_device_name()}, PuLID-FLUX full size, random weights, {SIZE}x{SIZE}, {STEPS} steps"
    )
    print()
    print("| mode | s/image | first call s | GiB after load | peak GiB |")
    print("|---|---|---|---|---|")
    for mode, best, first, loaded, peak in rows:
        print(f"| {mode} | {best:.2f} | {first:.1f} | {loaded:.1f} | {peak:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
