"""Record the official key/shape tables that the FLUX tests check our modules against.

Run by hand with a git mirror of ToTheBeginning/PuLID (not in CI: the tables are committed):

    .venv/bin/python tests/model/flux/record_official_tables.py /path/to/PuLID.git > tests/model/flux/official_tables.json

It imports the official module definitions (pulid/encoders_transformer.py, flux/model.py,
flux/modules/layers.py, flux/modules/autoencoder.py) from the mirror's HEAD, instantiates them on the meta
device (no weights, no GPU) and prints every state-dict key with its shape:
* `pulid_flux`: PuLIDPipeline's modules as `load_pretrain` loads them: `pulid_encoder.*` (IDFormer()) and
  `pulid_ca.{k}.*` (PerceiverAttentionCA() x the count PuLIDPipeline computes for 19 double / 38 single blocks);
* `flux_dev_bfl`: Flux(configs["flux-dev"].params), the key layout of `flux1-dev.safetensors`;
* `flux_tiny_bfl`: Flux at the tiny preset's sizes (FluxParams below), the layout the tiny preset writes;
* `flux_ae_bfl`: AutoEncoder(configs["flux-dev"].ae_params), the key layout of `ae.safetensors`.
The mirror's commit is recorded too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

FILES = [
    "pulid/__init__.py",
    "pulid/encoders_transformer.py",
    "flux/__init__.py",
    "flux/math.py",
    "flux/model.py",
    "flux/modules/__init__.py",
    "flux/modules/layers.py",
    "flux/modules/autoencoder.py",
]

TINY = {
    "in_channels": 64,
    "vec_in_dim": 32,
    "context_in_dim": 32,
    "hidden_size": 32,
    "mlp_ratio": 4.0,
    "num_heads": 2,
    "depth": 4,
    "depth_single_blocks": 8,
    "axes_dim": [4, 6, 6],
    "theta": 10_000,
    "qkv_bias": True,
    "guidance_embed": True,
}
FLUX_DEV = {**TINY, "vec_in_dim": 768, "context_in_dim": 4096, "hidden_size": 3072, "num_heads": 24}
FLUX_DEV.update(depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56])
AE_DEV = {
    "resolution": 256,
    "in_channels": 3,
    "ch": 128,
    "out_ch": 3,
    "ch_mult": [1, 2, 4, 4],
    "num_res_blocks": 2,
    "z_channels": 16,
    "scale_factor": 0.3611,
    "shift_factor": 0.1159,
}


def table(module: object) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}  # type: ignore[attr-defined]


def main() -> None:
    git_dir = sys.argv[1]
    commit = subprocess.run(
        ["git", "--git-dir", git_dir, "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        for name in FILES:
            text = subprocess.run(
                ["git", "--git-dir", git_dir, "show", f"HEAD:{name}"], capture_output=True, text=True
            ).stdout
            (Path(tmp) / name).parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / name).write_text(text)
        sys.modules["einops"] = types.SimpleNamespace(rearrange=None, repeat=None)  # used in forward only
        sys.path.insert(0, tmp)
        import torch
        from flux.model import Flux, FluxParams
        from flux.modules.autoencoder import AutoEncoder, AutoEncoderParams
        from pulid.encoders_transformer import IDFormer, PerceiverAttentionCA

        with torch.device("meta"):
            num_ca = 19 // 2 + 38 // 4 + int(19 % 2 != 0) + int(38 % 4 != 0)  # as PuLIDPipeline.__init__
            pulid = {f"pulid_encoder.{k}": v for k, v in table(IDFormer()).items()}
            ca = torch.nn.ModuleList([PerceiverAttentionCA() for _ in range(num_ca)])
            pulid.update({f"pulid_ca.{k}": v for k, v in table(ca).items()})
            out = {
                "official_commit": commit,
                "pulid_flux": pulid,
                "flux_dev_bfl": table(Flux(FluxParams(**FLUX_DEV))),
                "flux_tiny_bfl": table(Flux(FluxParams(**TINY))),
                "flux_ae_bfl": table(AutoEncoder(AutoEncoderParams(**AE_DEV))),
            }
    json.dump(out, sys.stdout, indent=0, sort_keys=False)
    print()


if __name__ == "__main__":
    main()
