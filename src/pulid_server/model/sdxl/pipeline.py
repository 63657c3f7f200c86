"""The PuLID v1 pipeline: SDXL text encoders + SDXL-Lightning UNet with ID attention, DPM++ 2M trailing.

Reads top to bottom like `pulid/pipeline.py` + diffusers' SDXL `__call__`, with what the reference does
per request made explicit:
* reference images -> ID tokens (cached per sha256 of the image bytes; uncond tokens computed once);
* several references are concatenated on the token axis (10 tokens for the main one, 5 or 10 per extra);
* prompt encoding exactly as diffusers' `encode_prompt` (penultimate hidden states, pooled from encoder 2);
* CFG batch `[negative x N ; positive x N]` with ID tokens tiled the same way; at guidance <= 1 (no CFG) each
  image's ID attention sees its uncond and cond tokens as one sequence of twice the length, as the reference's
  reshape of its [uncond; cond] pair does (`no_cfg_id_tokens="cond"` uses the cond tokens alone instead);
* `final_sigmas_type="sigma_min"`: the last step ends at sigma 0.0292 as in the pinned diffusers 0.25;
* latents: one `randn` per image, drawn in turn from one generator seeded with `seed` on the UNet device
  (image k of a batch is what the reference's k-th loop iteration would draw); VAE decode in fp32.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from pulid_server.model.common.face import FaceFeatures
from pulid_server.model.common.face_cache import FACE_FEATURES
from pulid_server.model.common.run import LogCallback, PipelineStats, StepCallback, no_log, no_step
from pulid_server.model.errors import NoFaceError
from pulid_server.model.sdxl.attention import MODES, IDContext
from pulid_server.model.sdxl.id_encoder import IDEncoder
from pulid_server.model.sdxl.request import GenerationRequest

NoCfgIdTokens = Literal["official", "cond"]


@dataclass
class TextEmbeddings:
    tokens: torch.Tensor  # [1, 77, cross_dim]
    pooled: torch.Tensor  # [1, pooled_dim]


class PulidPipeline:
    """Holds every component, loaded once. `generate` is the only per-request entry point."""

    def __init__(
        self,
        *,
        tokenizer: Any,
        tokenizer_2: Any,
        text_encoder: Any,
        text_encoder_2: Any,
        unet: Any,
        vae: Any,
        scheduler_config: dict[str, Any],
        id_encoder: IDEncoder,
        id_layers: torch.nn.ModuleList,
        face: FaceFeatures,
        face_key: str,
        device: torch.device,
        dtype: torch.dtype,
        preset: str,
        cache_size: int = 64,
        no_cfg_id_tokens: NoCfgIdTokens = "official",
    ) -> None:
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.text_encoder, self.text_encoder_2 = text_encoder, text_encoder_2
        self.unet, self.vae = unet, vae
        self.scheduler_config = dict(scheduler_config)
        self.id_encoder, self.id_layers, self.face = id_encoder, id_layers, face
        self.face_key = face_key  # names the face stack in the process-wide feature cache
        self.device, self.dtype, self.preset = device, dtype, preset
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        self.stats = PipelineStats()
        self._id_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._text_cache: OrderedDict[str, TextEmbeddings] = OrderedDict()
        self._cache_size = cache_size
        # guidance <= 1: "official" = uncond + cond ID tokens as one sequence (the reference), "cond" = cond only
        self.no_cfg_id_tokens: NoCfgIdTokens = no_cfg_id_tokens
        self.uncond_id = self._uncond_id_embedding()

    # ------------------------------------------------------------------ scheduler

    def make_scheduler(self) -> Any:
        """A fresh DPM-Solver++ 2M (trailing, sigma_min end) per call: its multistep state is per run."""
        from diffusers import DPMSolverMultistepScheduler

        return DPMSolverMultistepScheduler.from_config(
            self.scheduler_config, timestep_spacing="trailing", final_sigmas_type="sigma_min"
        )

    # ------------------------------------------------------------------ ID embeddings

    @torch.no_grad()
    def _uncond_id_embedding(self) -> torch.Tensor:
        """The encoder's response to all-zero inputs (the negative branch's "no identity")."""
        eva = self.face.eva.cfg
        width = int(self.id_encoder.body[0].in_features)  # type: ignore[arg-type]
        zeros = torch.zeros(1, width, device=self.device)
        taps = [torch.zeros(1, eva.grid * eva.grid + 1, eva.width, device=self.device)] * eva.num_taps
        return self.id_encoder(zeros, taps)

    @torch.no_grad()
    def id_embedding(self, index: int, data: bytes, image: Image.Image, log: LogCallback) -> torch.Tensor:
        """One reference image -> cond ID tokens [1, 10, C], cached by sha256 of the raw bytes."""
        key = hashlib.sha256(data).hexdigest()
        hit = self._id_cache.get(key)
        if hit is not None:
            self._id_cache.move_to_end(key)
            self.stats.id_cache_hits += 1
            log(f"id embedding cached for reference_images[{index}]")
            return hit

        def analyse() -> tuple[torch.Tensor, list[torch.Tensor]]:
            log(f"face analysis on reference_images[{index}]")
            self.stats.face_analyses += 1
            try:
                return self.face(image)
            except LookupError as exc:
                raise NoFaceError(index, str(exc)) from exc

        (id_cond, taps), shared = FACE_FEATURES.get(self.face_key, data, analyse)
        if shared:
            log(f"face features cached for reference_images[{index}]")
        self.stats.id_encodes += 1
        emb = self.id_encoder(id_cond.to(self.device), [t.to(self.device) for t in taps])
        self._id_cache[key] = emb
        while len(self._id_cache) > self._cache_size:
            self._id_cache.popitem(last=False)
        return emb

    def clear_id_cache(self) -> None:
        """Forget ID embeddings and the process-wide face features (the next request re-analyses)."""
        self._id_cache.clear()
        FACE_FEATURES.clear()

    def id_tokens(self, request: GenerationRequest, log: LogCallback) -> tuple[torch.Tensor, torch.Tensor]:
        """(uncond, cond) [1, T, C]: main image's 10 tokens, then 5 (or 10 with id_mix) per extra image."""
        conds, unconds = [], []
        for index, (data, image) in enumerate(request.reference_images):
            emb = self.id_embedding(index, data, image, log)
            keep = emb.shape[1] if index == 0 or request.id_mix else self.id_encoder.num_token
            conds.append(emb[:, :keep])
            unconds.append(self.uncond_id[:, :keep])
        return torch.cat(unconds, dim=1), torch.cat(conds, dim=1)

    # ------------------------------------------------------------------ text

    @torch.no_grad()
    def encode_text(self, text: str) -> TextEmbeddings:
        """diffusers SDXL `encode_prompt` for one string (cached: the default negative prompt repeats)."""
        hit = self._text_cache.get(text)
        if hit is not None:
            return hit
        self.stats.text_encodes += 1
        hidden, pooled = [], None
        for tokenizer, encoder in (
            (self.tokenizer, self.text_encoder),
            (self.tokenizer_2, self.text_encoder_2),
        ):
            ids = tokenizer(
                text,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            if pooled is None and out[0].ndim == 2:
                pooled = out[0]
            hidden.append(out.hidden_states[-2])
        assert pooled is not None, "text_encoder_2 must return pooled text_embeds"
        emb = TextEmbeddings(torch.cat(hidden, dim=-1).to(self.dtype), pooled.to(self.dtype))
        self._text_cache[text] = emb
        while len(self._text_cache) > self._cache_size:
            self._text_cache.popitem(last=False)
        return emb

    # ------------------------------------------------------------------ generation

    def initial_latents(self, request: GenerationRequest) -> torch.Tensor:
        c = self.unet.config.in_channels
        shape = (1, c, request.height // self.vae_scale_factor, request.width // self.vae_scale_factor)
        generator = torch.Generator(device=self.device).manual_seed(request.seed)
        draws = [torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)]
        draws += [
            torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype)
            for _ in range(1, request.num_images)
        ]
        return torch.cat(draws)

    def generate(
        self,
        request: GenerationRequest,
        on_step: StepCallback = no_step,
        log: LogCallback = no_log,
        latents: torch.Tensor | None = None,
    ) -> list[Image.Image]:
        """Run one request. `on_step(k, total)` runs after each step and may raise to cancel."""
        images = self.generate_array(request, on_step, log, latents)
        return [Image.fromarray(a) for a in (images * 255).round().astype(np.uint8)]

    @torch.no_grad()
    def generate_array(
        self,
        request: GenerationRequest,
        on_step: StepCallback = no_step,
        log: LogCallback = no_log,
        latents: torch.Tensor | None = None,
    ) -> np.ndarray:
        """As `generate`, returning float images [N, H, W, 3] in [0, 1] (diffusers' output_type="np")."""
        if request.mode not in MODES:
            raise ValueError(f"unknown mode {request.mode!r}; use 'fidelity' or 'extreme style'")
        if request.width % self.vae_scale_factor or request.height % self.vae_scale_factor:
            raise ValueError(f"width and height must be multiples of {self.vae_scale_factor}")
        n = request.num_images
        cfg = request.guidance_scale > 1.0 and self.unet.config.time_cond_proj_dim is None
        uncond_id, cond_id = self.id_tokens(request, log)

        log("encoding prompt")
        pos = self.encode_text(request.prompt)
        neg = self.encode_text(request.negative_prompt)
        tokens = torch.cat([neg.tokens] * n * int(cfg) + [pos.tokens] * n)
        pooled = torch.cat([neg.pooled] * n * int(cfg) + [pos.pooled] * n)
        ids = self._tile_id_tokens(uncond_id, cond_id, n, cfg)
        h, w = request.height, request.width
        time_ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=self.dtype, device=self.device).repeat(
            tokens.shape[0], 1
        )
        added = {"text_embeds": pooled, "time_ids": time_ids}
        id_ctx = IDContext(embedding=ids, scale=request.id_scale, mode=request.mode)

        scheduler = self.make_scheduler()
        scheduler.set_timesteps(request.num_inference_steps, device=self.device)
        if latents is None:
            latents = self.initial_latents(request)
        latents = latents.to(self.device, self.dtype) * scheduler.init_noise_sigma
        total = len(scheduler.timesteps)
        log(f"denoising {n} image(s), {total} steps")
        for k, t in enumerate(scheduler.timesteps, start=1):
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise = self.unet(
                model_in,
                t,
                encoder_hidden_states=tokens,
                added_cond_kwargs=added,
                cross_attention_kwargs={"id": id_ctx},
                return_dict=False,
            )[0]
            if cfg:
                noise_uncond, noise_text = noise.chunk(2)
                noise = noise_uncond + request.guidance_scale * (noise_text - noise_uncond)
            latents = scheduler.step(noise, t, latents, return_dict=False)[0]
            self.stats.denoise_steps += 1
            on_step(k, total)

        log("decoding")
        image = self.decode(latents)
        self.stats.generations += 1
        return image

    def _tile_id_tokens(self, uncond: torch.Tensor, cond: torch.Tensor, n: int, cfg: bool) -> torch.Tensor:
        """ID tokens for the UNet batch. The ID attention views them as [batch, -1, ...], so without CFG the
        rows [uncond, cond] of each image become one sequence of twice the length, as in the reference,
        whose [uncond; cond] pair meets a batch of 1."""
        if cfg:
            return torch.cat([uncond] * n + [cond] * n)
        if self.no_cfg_id_tokens == "cond":
            return torch.cat([cond] * n)
        return torch.cat([uncond, cond] * n)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """VAE decode in the VAE's dtype (fp32: the reference upcasts because of `force_upcast`)."""
        vae_dtype = next(self.vae.parameters()).dtype
        latents = latents.to(vae_dtype) / self.vae.config.scaling_factor
        image = self.vae.decode(latents, return_dict=False)[0]
        image = (image / 2 + 0.5).clamp(0, 1)
        return image.cpu().permute(0, 2, 3, 1).float().numpy()
