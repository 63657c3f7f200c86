"""PuLID-FLUX model overheads, as ratios measured in the same run.

1. Time: PuLID-FLUX pipeline (ID cached, prompt encoded each run) / plain diffusers FluxPipeline on a hook-free copy of the same
   tiny transformer, same text encoders, AE, noise, size and steps (tiny preset, CPU, best of interleaved
   runs, one thread). Goal <= 1.05.
2. FLOPs: one FLUX.1-dev transformer forward at 1024x1024 (4096 image tokens, 128 T5 tokens) with the 20
   ID cross-attentions / without, counted by torch.utils.flop_counter on the meta device (full size,
   no weights, deterministic). Goal <= 1.03.
3. Peak RSS (VmHWM) of a process that builds the tiny FLUX pipeline and runs `--jobs` generations, what a
   FLUX tiny worker holds beside its service code, against the same for the tiny SDXL pipeline.

Run: PYTHONPATH=. .venv/bin/python bench/bench_flux.py [--size 128] [--repeats 7] [--jobs 3]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import PY, REPO  # noqa: E402


def best_time(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_ratio(size: int, steps: int, repeats: int) -> tuple[float, float, float]:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from PIL import Image
    from skimage import data

    from pulid_server.model.flux import FluxRequest
    from pulid_server.model.flux.pipeline import pack
    from pulid_server.model.flux.presets import build_tiny

    pipe = build_tiny(torch.device("cpu"))
    image = Image.fromarray(data.astronaut())
    buf = io.BytesIO()
    image.save(buf, "PNG")
    request = FluxRequest(
        reference_image=(buf.getvalue(), image),
        prompt="a portrait photo",
        width=size,
        height=size,
        num_inference_steps=steps,
    )
    transformer = FluxTransformer2DModel.from_config(pipe.transformer.config)
    transformer.load_state_dict(pipe.transformer.state_dict())
    plain = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(
            base_image_seq_len=256,
            max_image_seq_len=4096,
            base_shift=0.5,
            max_shift=1.15,
            use_dynamic_shifting=True,
        ),
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        text_encoder_2=pipe.text_encoder_2,
        tokenizer_2=pipe.tokenizer_2,
        transformer=transformer.eval(),
    )
    plain.set_progress_bar_config(disable=True)
    noise = pipe.initial_noise(request)

    def run_pulid() -> object:
        pipe._text_cache.clear()  # FluxPipeline encodes the prompt on every call: so do we here
        return pipe.decode(pipe.denoise(request, noise=noise), request)

    def run_plain() -> object:
        return plain(
            prompt=request.prompt,
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=request.guidance_scale,
            max_sequence_length=request.max_sequence_length,
            latents=pack(noise),
        ).images

    with torch.no_grad():
        run_pulid(), run_plain()  # warm up; fills the ID and text caches
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved so load drift hits both alike
            ours.append(best_time(run_pulid))
            theirs.append(best_time(run_plain))
    return min(ours) / min(theirs), min(ours), min(theirs)


def flop_ratio(size: int, text_tokens: int) -> tuple[float, float, float]:
    from diffusers import FluxTransformer2DModel
    from torch.utils.flop_counter import FlopCounterMode

    from pulid_server.model.flux import configs
    from pulid_server.model.flux.id_attention import IDInjection
    from pulid_server.model.flux.presets import id_attention_modules

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(**configs.FLUX_DEV_TRANSFORMER).bfloat16()
        modules = id_attention_modules(configs.FLUX_DEV_TRANSFORMER, configs.ID_ATTENTION).bfloat16()
    injection = IDInjection(transformer, modules)
    tokens = (size // 16) ** 2

    def count(with_id: bool) -> float:
        with torch.device("meta"):
            bf16 = {"dtype": torch.bfloat16}
            t = torch.ones(1, **bf16)
            ids = torch.randn(1, 32, 2048, **bf16) if with_id else None
            with FlopCounterMode(display=False) as counter, injection.condition(ids, 1.0):
                transformer(
                    hidden_states=torch.randn(1, tokens, 64, **bf16),
                    encoder_hidden_states=torch.randn(1, text_tokens, 4096, **bf16),
                    pooled_projections=torch.randn(1, 768, **bf16),
                    timestep=t,
                    img_ids=torch.zeros(tokens, 3),
                    txt_ids=torch.zeros(text_tokens, 3),
                    guidance=t,
                    return_dict=False,
                )
        return float(counter.get_total_flops())

    plain, pulid = count(False), count(True)
    return pulid / plain, pulid, plain


RSS_SCRIPT = """
import io, sys, torch
from PIL import Image
from skimage import data
torch.set_grad_enabled(False)
image = Image.fromarray(data.astronaut()); buf = io.BytesIO(); image.save(buf, "PNG")
ref = (buf.getvalue(), image)
if sys.argv[1] == "flux":
    from pulid_server.model.flux import FluxRequest
    from pulid_server.model.flux.presets import build_tiny
    pipe = build_tiny(torch.device("cpu"))
    for seed in range(int(sys.argv[2])):
        pipe.generate(FluxRequest(reference_image=ref, prompt="a portrait photo", width=64, height=64,
                                  num_inference_steps=4, seed=seed))
else:
    from pulid_server.model.sdxl import GenerationRequest
    from pulid_server.model.sdxl.presets import build_tiny
    pipe = build_tiny(torch.device("cpu"))
    for seed in range(int(sys.argv[2])):
        pipe.generate(GenerationRequest(reference_images=[ref], prompt="a portrait photo", width=64, height=64,
                                        seed=seed))
print(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
"""


def peak_rss_mib(family: str, jobs: int) -> float:
    out = subprocess.run(
        [PY, "-c", RSS_SCRIPT, family, str(jobs)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # toy-size ops: thread hand-offs on a shared 2-core machine are pure noise
    ratio, ours, theirs = time_ratio(args.size, args.steps, args.repeats)
    flops = {n: flop_ratio(1024, n) for n in (128, 512)}
    flux_rss, sdxl_rss = peak_rss_mib("flux", args.jobs), peak_rss_mib("sdxl", args.jobs)
    print(
        f"tiny preset, CPU, {args.size}x{args.size}, {args.steps} steps, guidance 4, ID cached, best of "
        f"{args.repeats} interleaved runs ({ours * 1000:.0f} ms against {theirs * 1000:.0f} ms); FLOPs of one "
        "FLUX.1-dev transformer forward at 1024x1024 on the meta device."
    )
    print()
    print("| measure | ratio | goal | ok |")
    print("|---|---|---|---|")
    print(
        f"| PuLID-FLUX / plain diffusers FluxPipeline, same tiny transformer | {ratio:.3f} | <= 1.05 | {'yes' if ratio <= 1.05 else 'no'} |"
    )
    for n, (r, pulid, plain) in flops.items():
        ok = "yes" if r <= 1.03 else "no"
        print(
            f"| FLOPs with / without ID, 1024x1024, {n} T5 tokens ({pulid / 1e12:.2f} / {plain / 1e12:.2f} TFLOP) | {r:.4f} | <= 1.03 | {ok} |"
        )
    print(
        f"| peak RSS, tiny FLUX pipeline + {args.jobs} jobs / tiny SDXL, MiB ({flux_rss:.0f} / {sdxl_rss:.0f}) | {flux_rss / sdxl_rss:.2f} | - | - |"
    )


if __name__ == "__main__":
    main()
