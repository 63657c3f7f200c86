"""Official key names and shapes, written out from the reference tables (not from our modules)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pulid_server.model import WeightsMismatchError
from pulid_server.model.common.eva_clip import EvaConfig, EVAVisionTransformer
from pulid_server.model.common.face_nets import BiSeNet, RetinaFace
from pulid_server.model.common.weights import check_state_dict, load_strict, read_checkpoint, sub_dict
from pulid_server.model.sdxl.attention import install_id_processors
from pulid_server.model.sdxl.id_encoder import IDEncoder

Shapes = dict[str, tuple[int, ...]]

SDXL_UNET = {
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "layers_per_block": 2,
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
}


def _mlp(prefix: str, din: int, hidden: int, dout: int) -> Shapes:
    return {
        f"{prefix}.0.weight": (hidden, din), f"{prefix}.0.bias": (hidden,),
        f"{prefix}.1.weight": (hidden,), f"{prefix}.1.bias": (hidden,),
        f"{prefix}.3.weight": (hidden, hidden), f"{prefix}.3.bias": (hidden,),
        f"{prefix}.4.weight": (hidden,), f"{prefix}.4.bias": (hidden,),
        f"{prefix}.6.weight": (dout, hidden), f"{prefix}.6.bias": (dout,),
    }  # fmt: skip


def pulid_v1_shapes() -> Shapes:
    """§2.6 and §3.8 of the reference: `pulid_v1.bin`."""
    shapes = {f"id_adapter.{k}": v for k, v in _mlp("body", 1280, 1024, 10240).items()}
    for i in range(5):
        for name in (f"mapping_{i}", f"mapping_patch_{i}"):
            shapes.update({f"id_adapter.{k}": v for k, v in _mlp(name, 1024, 1024, 2048).items()})
    hidden_640 = {1, 3, 5, 7, *range(109, 120, 2)}
    for i in range(1, 140, 2):
        hidden = 640 if i in hidden_640 else 1280
        shapes[f"id_adapter_attn_layers.{i}.id_to_k.weight"] = (hidden, 2048)
        shapes[f"id_adapter_attn_layers.{i}.id_to_v.weight"] = (hidden, 2048)
    return shapes


def eva_visual_shapes() -> Shapes:
    """§2.5: the `visual.*` keys of EVA02_CLIP_L_336_psz14_s6B.pt."""
    s: Shapes = {
        "cls_token": (1, 1, 1024), "pos_embed": (1, 577, 1024),
        "patch_embed.proj.weight": (1024, 3, 14, 14), "patch_embed.proj.bias": (1024,),
        "rope.freqs_cos": (576, 64), "rope.freqs_sin": (576, 64),
        "norm.weight": (1024,), "norm.bias": (1024,), "head.weight": (768, 1024), "head.bias": (768,),
    }  # fmt: skip
    for b in range(24):
        p = f"blocks.{b}."
        s.update({
            p + "norm1.weight": (1024,), p + "norm1.bias": (1024,),
            p + "attn.q_bias": (1024,), p + "attn.v_bias": (1024,),
            p + "attn.q_proj.weight": (1024, 1024), p + "attn.k_proj.weight": (1024, 1024),
            p + "attn.v_proj.weight": (1024, 1024),
            p + "attn.inner_attn_ln.weight": (1024,), p + "attn.inner_attn_ln.bias": (1024,),
            p + "attn.proj.weight": (1024, 1024), p + "attn.proj.bias": (1024,),
            p + "attn.rope.freqs_cos": (576, 64), p + "attn.rope.freqs_sin": (576, 64),
            p + "norm2.weight": (1024,), p + "norm2.bias": (1024,),
            p + "mlp.w1.weight": (2730, 1024), p + "mlp.w1.bias": (2730,),
            p + "mlp.w2.weight": (2730, 1024), p + "mlp.w2.bias": (2730,),
            p + "mlp.ffn_ln.weight": (2730,), p + "mlp.ffn_ln.bias": (2730,),
            p + "mlp.w3.weight": (1024, 2730), p + "mlp.w3.bias": (1024,),
        })  # fmt: skip
    return s


def meta_state(shapes: Shapes) -> dict[str, torch.Tensor]:
    return {k: torch.empty(v, device="meta") for k, v in shapes.items()}


def numel(shapes: Shapes) -> int:
    return sum(int(torch.Size(v).numel()) for v in shapes.values())


def test_reference_tables_match_published_sizes() -> None:
    pulid = pulid_v1_shapes()
    assert numel(sub_dict(pulid, "id_adapter.")) == 54_886_400 and len(sub_dict(pulid, "id_adapter.")) == 110
    assert numel(sub_dict(pulid, "id_adapter_attn_layers.")) == 340_787_200
    eva = eva_visual_shapes()
    assert (len(eva), numel(eva)) == (562, 306_276_032)


def test_pulid_v1_loads_strictly_into_sdxl_unet_processors() -> None:
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SDXL_UNET)  # type: ignore[arg-type]
        encoder = IDEncoder()
    layers = install_id_processors(unet)
    state = meta_state(pulid_v1_shapes())
    load_strict(encoder, sub_dict(state, "id_adapter."), "pulid_v1.bin")
    load_strict(layers, sub_dict(state, "id_adapter_attn_layers."), "pulid_v1.bin")
    # index 2k+1 is the k-th cross-attention in diffusers' order (down -> up -> mid)
    names = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
    assert names[0].startswith("down_blocks.1.") and names[4].startswith("down_blocks.2.")
    assert names[24].startswith("up_blocks.0.") and names[54].startswith("up_blocks.1.")
    assert names[60].startswith("mid_block.") and len(names) == 70


def test_id_encoder_full_size_forward_from_table() -> None:
    torch.manual_seed(0)
    shapes = sub_dict(pulid_v1_shapes(), "id_adapter.")
    encoder = IDEncoder()
    load_strict(encoder, {k: torch.randn(v) * 0.02 for k, v in shapes.items()}, "pulid_v1.bin")
    out = encoder(torch.randn(2, 1280), [torch.randn(2, 577, 1024) for _ in range(5)])
    assert out.shape == (2, 10, 2048)


def test_eva_visual_loads_strictly_and_taps() -> None:
    with torch.device("meta"):
        eva = EVAVisionTransformer(EvaConfig())
    load_strict(eva, meta_state(eva_visual_shapes()), "EVA02_CLIP_L_336_psz14_s6B.pt")
    feat, taps = eva(torch.empty(1, 3, 336, 336, device="meta"))
    assert feat.shape == (1, 768) and [t.shape for t in taps] == [(1, 577, 1024)] * 5
    assert EvaConfig().tap_blocks == [4, 8, 12, 16, 20]


def test_eva_rope_buffers_match_reference_construction() -> None:
    # The checkpoint stores the buffers; ours must equal them (dim 32 interpolated from a 16 to a 24 grid).
    eva_rope = EVAVisionTransformer(EvaConfig(depth=1)).rope
    freqs = 1.0 / (10000 ** (torch.arange(0, 32, 2)[:16].float() / 32))
    t = torch.arange(24) / 24 * 16
    f = torch.einsum("i,f->if", t, freqs).repeat_interleave(2, -1)
    row = f[:, None, :].expand(24, 24, 32)
    col = f[None, :, :].expand(24, 24, 32)
    expected = torch.cat([row, col], -1).reshape(576, 64)
    torch.testing.assert_close(eva_rope.freqs_cos, expected.cos())
    torch.testing.assert_close(eva_rope.freqs_sin, expected.sin())


BISENET_KEYS: Shapes = {
    "cp.resnet.conv1.weight": (64, 3, 7, 7),
    "cp.resnet.layer2.0.downsample.0.weight": (128, 64, 1, 1),
    "cp.resnet.layer4.1.conv2.weight": (512, 512, 3, 3),
    "cp.arm16.conv.conv.weight": (128, 256, 3, 3),
    "cp.arm32.conv_atten.weight": (128, 128, 1, 1),
    "cp.arm32.bn_atten.running_var": (128,),
    "cp.conv_head32.conv.weight": (128, 128, 3, 3),
    "cp.conv_avg.conv.weight": (128, 512, 1, 1),
    "ffm.convblk.conv.weight": (256, 256, 1, 1),
    "ffm.conv1.weight": (64, 256, 1, 1),
    "ffm.conv2.weight": (256, 64, 1, 1),
    "conv_out.conv.conv.weight": (256, 256, 3, 3),
    "conv_out.conv_out.weight": (19, 256, 1, 1),
    "conv_out16.conv_out.weight": (19, 64, 1, 1),
    "conv_out32.conv.conv.weight": (64, 128, 3, 3),
}
RETINAFACE_KEYS: Shapes = {
    "body.conv1.weight": (64, 3, 7, 7),
    "body.layer1.0.downsample.0.weight": (256, 64, 1, 1),
    "body.layer3.5.conv3.weight": (1024, 256, 1, 1),
    "body.layer4.2.conv3.weight": (2048, 512, 1, 1),
    "fpn.output1.0.weight": (256, 512, 1, 1),
    "fpn.output3.0.weight": (256, 2048, 1, 1),
    "fpn.merge1.0.weight": (256, 256, 3, 3),
    "ssh1.conv3X3.0.weight": (128, 256, 3, 3),
    "ssh2.conv5X5_1.0.weight": (64, 256, 3, 3),
    "ssh3.conv7x7_3.1.running_mean": (64,),
    "ClassHead.0.conv1x1.weight": (4, 256, 1, 1),
    "BboxHead.1.conv1x1.weight": (8, 256, 1, 1),
    "LandmarkHead.2.conv1x1.weight": (20, 256, 1, 1),
}


@pytest.mark.parametrize(
    ("cls", "keys"), [(BiSeNet, BISENET_KEYS), (RetinaFace, RETINAFACE_KEYS)], ids=["bisenet", "retinaface"]
)
def test_facexlib_nets_have_the_released_key_names(cls: type, keys: Shapes) -> None:
    with torch.device("meta"):
        net = cls()
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    for key, shape in keys.items():
        assert ours.get(key) == shape, key
    load_strict(net, meta_state(ours), cls.__name__)  # no num_batches_tracked, like the released files


def test_retinaface_checkpoint_with_module_prefix_roundtrip(tmp_path: Path) -> None:
    small = RetinaFace(width=8)
    path = tmp_path / "detection.pth"
    torch.save({f"module.{k}": v for k, v in small.state_dict().items()}, path)
    fresh = RetinaFace(width=8)
    load_strict(fresh, read_checkpoint(path), str(path))
    for k, v in small.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


def test_mismatch_names_the_key_and_shape() -> None:
    shapes = dict(sub_dict(pulid_v1_shapes(), "id_adapter."))
    shapes["body.6.weight"] = (10240, 1000)
    shapes["mapping_9.0.weight"] = (1, 1)
    del shapes["mapping_patch_4.6.bias"]
    with torch.device("meta"):
        encoder = IDEncoder()
    with pytest.raises(WeightsMismatchError) as err:
        check_state_dict(encoder, meta_state(shapes), "pulid_v1.bin")
    text = str(err.value)
    assert "pulid_v1.bin" in text
    assert "'body.6.weight': file (10240, 1000), model (10240, 1024)" in text
    assert "unexpected key 'mapping_9.0.weight'" in text
    assert "missing key 'mapping_patch_4.6.bias'" in text
