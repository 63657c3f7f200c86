"""Full-size SDXL on one GPU, random weights (no downloads): seconds per image and peak memory,
eager against torch.compile of the UNet, in the same run. Not part of bench/run_all.py (CPU-only).

What runs: the SDXL-base architecture built from its configs (UNet 2.6 B, CLIP-L + OpenCLIP-bigG text
encoders, VAE with force_upcast like the real one) in fp16, diffusers' StableDiffusionXLPipeline with
DPM++ 2M trailing, 4 steps, CFG 1.2 (batched uncond), 1024x1024, batch 1 and 4. Text encoders run on
random token ids inside the timed region (no tokenizer files). Random weights give the real cost of every
kernel; the images are noise. PuLID's ID attention adds ~0.4 % FLOPs (docs/model.md), not modelled here.

Budget: about 3-6 minutes on one H100 (two UNet compiles dominate); `--deadline` skips what would not fit.
Run: .venv/bin/python bench/gpu_fullsize.py [--repeats 3] [--no-compile] [--deadline 450]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from typing import Any

SIZE = 1024
STEPS = 4
GUIDANCE = 1.2


def build(device: Any, dtype: Any) -> Any:
    import torch
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: random init of 2.6 B params on CPU takes minutes
        unet = UNet2DConditionModel(
            sample_size=128,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            block_out_channels=(320, 640, 1280),
            layers_per_block=2,
            cross_attention_dim=2048,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        te1 = CLIPTextModel(
            CLIPTextConfig(
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                hidden_act="quick_gelu",
                projection_dim=768,
            )
        )
        te2 = CLIPTextModelWithProjection(
            CLIPTextConfig(
                hidden_size=1280,
                intermediate_size=5120,
                num_hidden_layers=32,
                num_attention_heads=20,
                hidden_act="gelu",
                projection_dim=1280,
            )
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=1024,
            scaling_factor=0.13025,
            force_upcast=True,
        )
    scheduler = DPMSolverMultistepScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing"
    )
    pipe: Any = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=None,
        tokenizer_2=None,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def encode(pipe: Any, device: Any) -> dict[str, Any]:
    """SDXL prompt encoding on random token ids: penultimate hidden states of both encoders, pooled from #2."""
    import torch

    ids = torch.randint(0, 49407, (2, 77), device=device)  # row 0: prompt, row 1: negative prompt
    h1 = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    out2 = pipe.text_encoder_2(ids, output_hidden_states=True)
    embeds = torch.cat([h1, out2.hidden_states[-2]], dim=-1)
    return {
        "prompt_embeds": embeds[:1],
        "negative_prompt_embeds": embeds[1:],
        "pooled_prompt_embeds": out2.text_embeds[:1],
        "negative_pooled_prompt_embeds": out2.text_embeds[1:],
    }


def generate(pipe: Any, device: Any, batch: int) -> None:
    import torch

    with torch.inference_mode():
        images = pipe(
            **encode(pipe, device),
            num_inference_steps=STEPS,
            guidance_scale=GUIDANCE,
            height=SIZE,
            width=SIZE,
            num_images_per_prompt=batch,
            output_type="pil",
        ).images
    torch.cuda.synchronize()
    assert len(images) == batch and images[0].size == (SIZE, SIZE)


@dataclass
class Row:
    mode: str
    batch: int
    first_s: float  # includes compilation for torch.compile
    s_per_image: float
    peak_gib: float


def measure(pipe: Any, device: Any, mode: str, batch: int, repeats: int) -> Row:
    import torch

    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    generate(pipe, device, batch)  # warm-up (and compile)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        generate(pipe, device, batch)
        times.append(time.perf_counter() - start)
    return Row(mode, batch, first, min(times) / batch, torch.cuda.max_memory_allocated() / 2**30)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument(
        "--deadline", type=float, default=450.0, help="seconds; skip runs that would start later"
    )
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            "gpu_fullsize: no CUDA GPU here; this benchmark needs one (it is not part of `make bench`). "
            "Nothing was measured.",
            file=sys.stderr,
        )
        return 0
    began = time.monotonic()
    device, dtype = torch.device("cuda"), torch.float16
    torch.backends.cuda.matmul.allow_tf32 = True  # the fp32 VAE decode (force_upcast) uses TF32
    torch.backends.cudnn.allow_tf32 = True
    pipe = build(device, dtype)
    print(
        f"built in {time.monotonic() - began:.0f} s on {torch.cuda.get_device_name()}; "
        f"UNet {sum(p.numel() for p in pipe.unet.parameters()) / 1e9:.2f} B params",
        flush=True,
    )
    rows: list[Row] = []
    plan = [("eager", 1), ("eager", 4)] + ([] if args.no_compile else [("compile", 1), ("compile", 4)])
    for mode, batch in plan:
        if time.monotonic() - began > args.deadline:
            print(f"skipped {mode} batch {batch}: past --deadline {args.deadline:.0f} s", flush=True)
            continue
        if mode == "compile" and not isinstance(pipe.unet, torch._dynamo.eval_frame.OptimizedModule):
            pipe.unet.to(memory_format=torch.channels_last)
            pipe.unet = torch.compile(pipe.unet, dynamic=False)
        rows.append(measure(pipe, device, mode, batch, args.repeats))
        r = rows[-1]
        print(
            f"{mode} batch {batch}: {r.s_per_image:.3f} s/image (first call {r.first_s:.1f} s), "
            f"peak {r.peak_gib:.1f} GiB",
            flush=True,
        )
    report(rows, torch.cuda.get_device_name(), args.repeats)
    return 0


def report(rows: list[Row], gpu: str, repeats: int) -> None:
    eager = {r.batch: r.s_per_image for r in rows if r.mode == "eager"}
    print()
    print(
        f"{gpu}, SDXL architecture with random weights, fp16 (VAE decode fp32), {SIZE}x{SIZE}, {STEPS} steps, "
        f"CFG {GUIDANCE}; s/image = best of {repeats} / batch"
    )
    print()
    print("| mode | batch | s/image | vs eager same batch | first call s | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r.s_per_image / eager[r.batch]:.2f}" if r.batch in eager else "n/a"
        print(
            f"| {r.mode} | {r.batch} | {r.s_per_image:.3f} | {ratio} | {r.first_s:.1f} | {r.peak_gib:.1f} |"
        )


if __name__ == "__main__":
    sys.exit(main())
