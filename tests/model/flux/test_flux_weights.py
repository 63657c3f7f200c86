"""Weight compatibility: the official key names and shapes, taken from the official module definitions
(official_tables.json, recorded from ToTheBeginning/PuLID by record_official_tables.py), load strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pulid_server.model import WeightsMismatchError
from pulid_server.model.common.weights import check_state_dict
from pulid_server.model.flux import configs
from pulid_server.model.flux.convert import to_bfl, to_diffusers
from pulid_server.model.flux.id_former import IDFormer
from pulid_server.model.flux.pipeline import PulidFluxPipeline
from pulid_server.model.flux.presets import (
    id_attention_modules,
    load_pulid,
    transformer_from_folder,
    transformer_from_single_file,
    write_single_file,
)

Tables = dict[str, dict[str, list[int]]]


def meta_state(table: dict[str, list[int]]) -> dict[str, torch.Tensor]:
    return {k: torch.empty(shape, device="meta") for k, shape in table.items()}


def meta_model(cls: type, config: dict[str, object]) -> torch.nn.Module:
    with torch.device("meta"):
        return cls(**config)  # type: ignore[no-any-return]


def test_pulid_flux_file_layout_is_ours_key_for_key(official_tables: Tables) -> None:
    """312 tensors: `pulid_encoder.*` (IDFormer, `proj_out` a raw [1024, 2048] parameter) and
    `pulid_ca.0..19.*`, exactly the names and shapes of the official modules."""
    with torch.device("meta"):
        former = IDFormer(**configs.ID_FORMER)
        attention = id_attention_modules(configs.FLUX_DEV_TRANSFORMER, configs.ID_ATTENTION)
    ours = {f"pulid_encoder.{k}": list(v.shape) for k, v in former.state_dict().items()}
    ours.update({f"pulid_ca.{k}": list(v.shape) for k, v in attention.state_dict().items()})
    assert ours == official_tables["pulid_flux"]
    assert len(ours) == 312 and ours["pulid_encoder.proj_out"] == [1024, 2048]
    assert sum(torch.Size(s).numel() for s in ours.values()) == 571_033_600


def _tiny_pulid() -> tuple[IDFormer, torch.nn.ModuleList]:
    former = IDFormer(id_dim=544, vit_dim=32, **configs.TINY_ID_FORMER)
    return former, id_attention_modules(configs.TINY_TRANSFORMER, configs.TINY_ID_ATTENTION)


def test_pulid_file_loads_strictly_and_names_the_bad_key(tmp_path: Path) -> None:
    former, attention = _tiny_pulid()
    state = {f"pulid_encoder.{k}": v for k, v in former.state_dict().items()}
    state.update({f"pulid_ca.{k}": v for k, v in attention.state_dict().items()})
    save_file(state, str(tmp_path / "good.safetensors"))
    fresh_former, fresh_attention = _tiny_pulid()
    load_pulid(tmp_path / "good.safetensors", fresh_former, fresh_attention)
    assert torch.equal(fresh_former.proj_out, former.proj_out)
    assert torch.equal(fresh_attention[3].to_kv.weight, attention[3].to_kv.weight)

    state["pulid_ca.3.to_out.weight"] = torch.zeros(5, 5)
    save_file(state, str(tmp_path / "bad.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"to_out\.weight"):
        load_pulid(tmp_path / "bad.safetensors", *_tiny_pulid())
    save_file({**state, "lora.weight": torch.zeros(1)}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(WeightsMismatchError, match="unexpected modules"):
        load_pulid(tmp_path / "extra.safetensors", *_tiny_pulid())


@pytest.mark.parametrize(
    ("table", "config"),
    [("flux_dev_bfl", configs.FLUX_DEV_TRANSFORMER), ("flux_tiny_bfl", configs.TINY_TRANSFORMER)],
)
def test_bfl_layout_converts_to_the_diffusers_model_exactly(
    official_tables: Tables, table: str, config: dict[str, object]
) -> None:
    """flux1-dev.safetensors' layout (and the tiny preset's) -> every key and shape of diffusers' model,
    nothing left over; and back."""
    from diffusers import FluxTransformer2DModel

    bfl = meta_state(official_tables[table])
    converted = to_diffusers(bfl, config)
    check_state_dict(meta_model(FluxTransformer2DModel, config), converted, table)
    back = to_bfl(converted, config)
    assert {k: list(v.shape) for k, v in back.items()} == official_tables[table]


def test_our_converter_agrees_with_diffusers_at_full_width(official_tables: Tables) -> None:
    """Same names, shapes and values (row order of the split fused QKV / QKV+MLP and of the swapped final
    modulation) as diffusers' converter, on full-width FLUX.1-dev with one block of each kind. Each row is
    filled with its own number, so any row put in the wrong place shows."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    config = {**configs.FLUX_DEV_TRANSFORMER, "num_layers": 1, "num_single_layers": 1}
    keep = [
        k for k in official_tables["flux_dev_bfl"] if not k.startswith(("double_blocks.", "single_blocks."))
    ]
    keep += [
        k for k in official_tables["flux_dev_bfl"] if k.startswith(("double_blocks.0.", "single_blocks.0."))
    ]
    state: dict[str, torch.Tensor] = {}
    for i, key in enumerate(keep):
        shape = official_tables["flux_dev_bfl"][key]
        rows = (torch.arange(shape[0]) * 7 + i) % 251
        state[key] = rows.to(torch.uint8).view(-1, *[1] * (len(shape) - 1)).expand(*shape)
    ours = to_diffusers(dict(state), config)
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(state))
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_ae_single_file_layout_converts_to_the_diffusers_vae(official_tables: Tables) -> None:
    """ae.safetensors' layout through diffusers' LDM VAE converter = the FLUX.1-dev AutoencoderKL."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    vae = meta_model(AutoencoderKL, configs.FLUX_DEV_VAE)
    converted = convert_ldm_vae_checkpoint(meta_state(official_tables["flux_ae_bfl"]), dict(vae.config))  # type: ignore[attr-defined]
    check_state_dict(vae, converted, "ae.safetensors")


def test_tiny_single_file_is_in_the_official_bfl_layout(official_tables: Tables, tmp_path: Path) -> None:
    from diffusers import FluxTransformer2DModel
    from safetensors import safe_open

    path = write_single_file(FluxTransformer2DModel(**configs.TINY_TRANSFORMER), tmp_path)
    with safe_open(str(path), "pt") as f:
        table = {k: list(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    assert table == official_tables["flux_tiny_bfl"]


def test_both_layouts_load_the_same_weights(flux: PulidFluxPipeline, tmp_path: Path) -> None:
    """The tiny transformer through the BFL single-file path and through the diffusers folder path."""
    single = transformer_from_single_file(
        write_single_file(flux.transformer, tmp_path), tmp_path, torch.float32
    )
    flux.transformer.save_pretrained(str(tmp_path / "transformer"))
    folder = transformer_from_folder(tmp_path / "transformer", torch.float32)
    want = flux.transformer.state_dict()
    for model in (single, folder):
        got = model.state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)


def test_a_single_file_with_a_missing_tensor_is_refused_by_name(
    flux: PulidFluxPipeline, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    path = write_single_file(flux.transformer, tmp_path)
    state = load_file(str(path))
    del state["single_blocks.4.linear1.weight"]
    save_file(state, str(path))
    with pytest.raises(WeightsMismatchError, match=r"single_transformer_blocks\.4\.attn\.to_q\.weight"):
        transformer_from_single_file(path, tmp_path, torch.float32)


def test_folded_id_attention_is_the_official_maths() -> None:
    """`fold` + `attend` (the pipeline's path) equals the official `PerceiverAttentionCA.forward`."""
    from pulid_server.model.flux.id_attention import PerceiverAttentionCA

    torch.manual_seed(0)
    ca = PerceiverAttentionCA(dim=96, dim_head=16, heads=4, kv_dim=48)
    for p in ca.parameters():
        torch.nn.init.normal_(p, std=0.2)
    tokens, image = torch.randn(2, 32, 48), torch.randn(2, 50, 96)
    with torch.no_grad():
        assert torch.allclose(ca.attend(ca.fold(tokens), image), ca(tokens, image), atol=1e-5)
