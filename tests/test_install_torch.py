"""`make install` picks the torch build for the machine (scripts/install-torch.sh), shown as the pip commands
it would run (TORCH_DRY_RUN=1): CUDA where `nvidia-smi` lists a GPU, else the CPU build from a local wheel
(--no-index, so no index can hang it) or the official CPU index; overridable; a matching torch is kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.servers import REPO

SCRIPT = REPO / "scripts" / "install-torch.sh"
ABSENT = "9.9.9"  # a version no environment has, so `auto` has to choose


def plan(tmp_path: Path, gpu: bool | None, **env: str) -> list[str]:
    """The pip commands, with a stand-in `nvidia-smi` first on PATH (listing a GPU, or failing)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-0)'\n" if gpu else "#!/bin/sh\nexit 9\n")
    smi.chmod(0o755)
    out = subprocess.run(
        ["sh", str(SCRIPT), sys.executable],
        env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TORCH_DRY_RUN": "1", **env},
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return out.stdout.splitlines()


def test_no_gpu_takes_the_cpu_build_local_wheel_first(tmp_path: Path) -> None:
    assert plan(tmp_path, gpu=False, TORCH_VERSION=ABSENT) == [
        f"pip install -q --no-index --no-deps torch=={ABSENT}+cpu",
        f"pip install -q torch=={ABSENT}+cpu",
    ]


def test_an_nvidia_gpu_takes_pypis_cuda_build(tmp_path: Path) -> None:
    import torch

    replaced = ["pip uninstall -q -y torch"] if torch.__version__.endswith("+cpu") else []
    assert plan(tmp_path, gpu=True, TORCH_VERSION=ABSENT) == [*replaced, f"pip install -q torch=={ABSENT}"]


def test_the_choice_is_overridable_and_an_installed_build_is_kept(tmp_path: Path) -> None:
    import torch

    args = "torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
    assert plan(tmp_path, gpu=False, TORCH=args) == [f"pip install -q {args}"]
    installed = torch.__version__.split("+")[0]
    assert plan(tmp_path, gpu=True, TORCH_VERSION=installed) == []  # auto keeps what is there


def test_make_serve_takes_a_port() -> None:
    # Under `make test` the parent make's MAKEFLAGS/MAKELEVEL would add "Entering directory" lines.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    out = subprocess.run(
        ["make", "--no-print-directory", "-n", "serve", "PORT=8001"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.splitlines()[-1].split() == [".venv/bin/pulid", "serve", "--port", "8001"]
