"""The PuLID-FLUX pipeline: T5 + CLIP text encoders, FLUX.1-dev transformer with ID cross-attention, AE.

Reads top to bottom like the official `app_flux.py` `generate_image` + `flux/sampling.py` `denoise`:
* reference image -> face features (process-wide cache shared with the SDXL family) -> IDFormer tokens
  (cached per sha256 of the image bytes); the "uncond" ID is the IDFormer on all-zero inputs;
* prompt -> T5 `last_hidden_state` (padded to `max_sequence_length`) and CLIP `pooler_output`;
* noise: `randn(1, 16, 2*ceil(h/16), 2*ceil(w/16))` in the compute dtype, drawn on the compute device
  from a generator seeded with `seed`, packed into 2x2 patches;
* schedule: `linspace(1, 0, steps + 1)` with FLUX's shift, mu from the image token count;
* step i: the transformer with the distilled guidance, with the ID only when `i >= start_step`; with
  true CFG (`|true_cfg - 1| > 0.01`) and `i >= timestep_to_start_cfg` also a negative pass (negative
  prompt, uncond ID or no ID before `start_step`), `pred = neg + true_cfg * (pos - neg)`; Euler step
  `img += (t_prev - t_curr) * pred` in the compute dtype (bf16 on GPU);
* AE decode of the unpacked fp32 latents under bf16 autocast (GPU), `127.5 * (x + 1)` truncated to uint8.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, cast

import torch
from PIL import Image

from pulid_server.model.common.face import FaceFeatures
from pulid_server.model.common.face_cache import FACE_FEATURES
from pulid_server.model.common.face_stack import face_modules
from pulid_server.model.common.run import LogCallback, StepCallback, no_log, no_step
from pulid_server.model.errors import NoFaceError
from pulid_server.model.flux.id_attention import IDInjection
from pulid_server.model.flux.id_former import IDFormer
from pulid_server.model.flux.memory import Residency
from pulid_server.model.flux.request import FluxRequest, FluxStats

LATENT_CHANNELS = 16


@dataclass
class TextEmbeddings:
    t5: torch.Tensor  # [1, max_sequence_length, joint_attention_dim]
    pooled: torch.Tensor  # [1, pooled_projection_dim]


def schedule(num_steps: int, image_seq_len: int) -> list[float]:
    """Official `get_schedule`: sigmas 1 -> 0, shifted with mu = 0.5 at 256 tokens .. 1.15 at 4096."""
    slope = (1.15 - 0.5) / (4096 - 256)
    mu = slope * image_seq_len + (0.5 - slope * 256)
    t = torch.linspace(1, 0, num_steps + 1)
    shifted: list[float] = (math.exp(mu) / (math.exp(mu) + (1 / t - 1))).tolist()
    return shifted


def latent_grid(height: int, width: int) -> tuple[int, int]:
    """Latent rows and columns of 2x2 patches: the official code rounds the image up to 16 px."""
    return math.ceil(height / 16), math.ceil(width / 16)


def pack(noise: torch.Tensor) -> torch.Tensor:
    """[B, C, 2h, 2w] -> [B, h*w, C*4], channels then the 2x2 patch (einops `b c (h ph) (w pw) -> b (h w) (c ph pw)`)."""
    b, c, h2, w2 = noise.shape
    x = noise.view(b, c, h2 // 2, 2, w2 // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h2 // 2) * (w2 // 2), c * 4)


def unpack(x: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    b, _, c4 = x.shape
    x = x.view(b, rows, cols, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, c4 // 4, rows * 2, cols * 2)


def image_ids(rows: int, cols: int, device: torch.device) -> torch.Tensor:
    """Positions (0, row, col) of each image token, for FLUX's 3-axis RoPE."""
    ids = torch.zeros(rows, cols, 3, device=device)
    ids[..., 1] = torch.arange(rows, device=device)[:, None]
    ids[..., 2] = torch.arange(cols, device=device)[None, :]
    return ids.reshape(rows * cols, 3)


class PulidFluxPipeline:
    """Holds every component, loaded once. `generate` is the only per-request entry point."""

    def __init__(
        self,
        *,
        tokenizer: Any,
        text_encoder: Any,
        tokenizer_2: Any,
        text_encoder_2: Any,
        transformer: Any,
        vae: Any,
        id_former: IDFormer,
        id_attention: torch.nn.ModuleList,
        face: FaceFeatures,
        face_key: str,
        device: torch.device,
        dtype: torch.dtype,
        residency: Residency,
        preset: str,
        cache_size: int = 64,
    ) -> None:
        self.tokenizer, self.text_encoder = tokenizer, text_encoder
        self.tokenizer_2, self.text_encoder_2 = tokenizer_2, text_encoder_2
        self.transformer, self.vae = transformer, vae
        self.id_former, self.id_attention = id_former, id_attention
        self.face, self.face_key = face, face_key
        self.device, self.dtype, self.residency, self.preset = device, dtype, residency, preset
        self.injection = IDInjection(transformer, id_attention)
        self.stats = FluxStats()
        self._uncond: torch.Tensor | None = None
        self._id_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache: OrderedDict[tuple[str, int], TextEmbeddings] = OrderedDict()
        self._cache_size = cache_size

    # ------------------------------------------------------------------ ID tokens

    @torch.no_grad()
    def id_tokens(self, data: bytes, image: Image.Image, log: LogCallback) -> torch.Tensor:
        """Reference image -> IDFormer tokens [1, 32, 2048] in the compute dtype, cached by sha256."""
        key = hashlib.sha256(data).hexdigest()
        hit = self._id_cache.get(key)
        if hit is not None:
            self._id_cache.move_to_end(key)
            self.stats.id_cache_hits += 1
            log("id embedding cached for reference_image")
            return hit

        def analyse() -> tuple[torch.Tensor, list[torch.Tensor]]:
            log("face analysis on reference_image")
            self.stats.face_analyses += 1
            try:
                return self.face(image)
            except LookupError as exc:
                raise NoFaceError(0, str(exc)) from exc

        with self.residency.use("id", *face_modules(self.face), self.id_former):
            (id_cond, taps), shared = FACE_FEATURES.get(self.face_key, data, analyse)
            if shared:
                log("face features cached for reference_image")
            self.stats.id_encodes += 1
            tokens = self.id_former(self._cast(id_cond), [self._cast(t) for t in taps])
        self._id_cache[key] = tokens
        while len(self._id_cache) > self._cache_size:
            self._id_cache.popitem(last=False)
        return tokens

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        return t.to(self.device, self.dtype)

    @torch.no_grad()
    def uncond_tokens(self) -> torch.Tensor:
        """The IDFormer on all-zero id_cond and taps (the negative pass's ID), computed once."""
        if self._uncond is None:
            f = self.id_former
            width = cast(torch.nn.Linear, f.id_embedding_mapping[0]).in_features
            eva = self.face.eva.cfg
            zeros = torch.zeros(1, width, device=self.device, dtype=self.dtype)
            taps = [torch.zeros(1, eva.grid * eva.grid + 1, eva.width, device=self.device, dtype=self.dtype)]
            with self.residency.use("id", f):
                self._uncond = f(zeros, taps * eva.num_taps)
        return self._uncond

    def clear_id_cache(self) -> None:
        """Forget ID tokens and the process-wide face features (the next request re-analyses)."""
        self._id_cache.clear()
        FACE_FEATURES.clear()

    # ------------------------------------------------------------------ text

    @torch.no_grad()
    def encode_text(self, text: str, max_sequence_length: int) -> TextEmbeddings:
        """Official HFEmbedder: T5 last_hidden_state (padded/truncated to the length, no attention mask)
        and CLIP pooler_output (77 tokens). Cached: the same negative prompt repeats."""
        key = (text, max_sequence_length)
        hit = self._text_cache.get(key)
        if hit is not None:
            return hit
        self.stats.text_encodes += 1

        def ids(tokenizer: Any, length: int) -> torch.Tensor:
            out = tokenizer(
                text, truncation=True, max_length=length, padding="max_length", return_tensors="pt"
            )
            return out.input_ids.to(self.device)

        t5 = self.text_encoder_2(ids(self.tokenizer_2, max_sequence_length)).last_hidden_state
        pooled = self.text_encoder(ids(self.tokenizer, 77)).pooler_output
        emb = TextEmbeddings(t5.to(self.dtype), pooled.to(self.dtype))
        self._text_cache[key] = emb
        while len(self._text_cache) > self._cache_size:
            self._text_cache.popitem(last=False)
        return emb

    # ------------------------------------------------------------------ generation

    def initial_noise(self, request: FluxRequest) -> torch.Tensor:
        rows, cols = latent_grid(request.height, request.width)
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        shape = (1, LATENT_CHANNELS, 2 * rows, 2 * cols)
        return torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)

    def generate(
        self, request: FluxRequest, on_step: StepCallback = no_step, log: LogCallback = no_log
    ) -> Image.Image:
        """Run one request. `on_step(k, total)` runs after each step and may raise to cancel."""
        latents = self.denoise(request, on_step, log)
        log("decoding")
        image = self.decode(latents, request)
        self.stats.generations += 1
        return image

    @torch.no_grad()
    def denoise(
        self,
        request: FluxRequest,
        on_step: StepCallback = no_step,
        log: LogCallback = no_log,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Packed latents [1, tokens, 64] after the last step (the official `denoise`)."""
        tokens = self.id_tokens(*request.reference_image, log)
        true_cfg = abs(request.true_cfg - 1.0) > 1e-2
        uncond = self.uncond_tokens() if true_cfg else None

        log("encoding prompt")
        with self.residency.use("text", self.text_encoder, self.text_encoder_2):
            pos = self.encode_text(request.prompt, request.max_sequence_length)
            neg = self.encode_text(request.negative_prompt, request.max_sequence_length) if true_cfg else None

        img = pack(self.initial_noise(request) if noise is None else noise.to(self.device, self.dtype))
        rows, cols = latent_grid(request.height, request.width)
        img_ids = image_ids(rows, cols, self.device)
        txt_ids = torch.zeros(request.max_sequence_length, 3, device=self.device)
        timesteps = schedule(request.num_inference_steps, img.shape[1])
        guidance = torch.full((1,), request.guidance_scale, device=self.device, dtype=self.dtype)
        total = len(timesteps) - 1

        def predict(
            text: TextEmbeddings, t_vec: torch.Tensor, id_tokens: torch.Tensor | None
        ) -> torch.Tensor:
            self.stats.transformer_calls += 1
            self.stats.id_calls += int(id_tokens is not None)
            with self.injection.condition(id_tokens, request.id_weight):
                out = self.transformer(
                    hidden_states=img,
                    encoder_hidden_states=text.t5,
                    pooled_projections=text.pooled,
                    timestep=t_vec,  # sigma in [0, 1]: diffusers multiplies by 1000 as BFL does
                    img_ids=img_ids,
                    txt_ids=txt_ids,
                    guidance=guidance if self.transformer.config.guidance_embeds else None,
                    return_dict=False,
                )
            return out[0]

        log(f"denoising, {total} steps")
        with self.residency.use("transformer", self.transformer, self.id_attention):
            for i, (t_curr, t_prev) in enumerate(zip(timesteps[:-1], timesteps[1:])):
                t_vec = torch.full((1,), t_curr, device=self.device, dtype=self.dtype)
                with_id = i >= request.start_step
                pred = predict(pos, t_vec, tokens if with_id else None)
                if true_cfg and i >= request.timestep_to_start_cfg:
                    assert neg is not None
                    neg_pred = predict(neg, t_vec, uncond if with_id else None)
                    pred = neg_pred + request.true_cfg * (pred - neg_pred)
                img = img + (t_prev - t_curr) * pred
                self.stats.denoise_steps += 1
                on_step(i + 1, total)
        return img

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, request: FluxRequest) -> Image.Image:
        """AE decode as the official app: fp32 latents, bf16 autocast on GPU, clamp, truncate to uint8;
        cropped to the requested size when it is not a multiple of 16."""
        rows, cols = latent_grid(request.height, request.width)
        z = unpack(latents.float(), rows, cols)
        z = z / self.vae.config.scaling_factor + self.vae.config.shift_factor
        with (
            self.residency.use("vae", self.vae),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"),
        ):
            x = self.vae.decode(z.to(self.device), return_dict=False)[0]
        x = (127.5 * (x[0].clamp(-1, 1) + 1.0)).to(torch.uint8)
        array = x.permute(1, 2, 0).cpu().numpy()[: request.height, : request.width]
        return Image.fromarray(array)
