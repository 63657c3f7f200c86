"""The image safety checkers: tiny presets, the official loading path, and diffusers' semantics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from pulid_server.model import WeightsMismatchError, WeightsMissingError, get_family
from pulid_server.model.cli import weights_app
from pulid_server.model.safety.checkers import ClassifierChecker, SdChecker
from pulid_server.model.safety.files import SD_CHECKER, VIT_NSFW
from pulid_server.model.safety.presets import write_tiny_sd, write_tiny_vit
from tests.fixtures.safety import THRESHOLD, clean_image, flagged_image


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        flagged_image(),
        clean_image(),
        Image.new("RGB", (64, 48), (128, 128, 128)),
        Image.fromarray(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)),
        Image.new("L", (40, 40), 200),  # not RGB: converted
    ]


@pytest.fixture(scope="module")
def vit() -> ClassifierChecker:
    checker: ClassifierChecker = get_family("safety-vit").load("tiny", "cpu", None)
    return checker


@pytest.fixture(scope="module")
def sd() -> SdChecker:
    checker: SdChecker = get_family("safety-sd").load("tiny", "cpu", None)
    return checker


def test_tiny_vit_flags_the_known_image_and_not_the_other(vit: ClassifierChecker) -> None:
    """The threshold the HTTP tests use (tests/fixtures/safety.py) sits well between the two scores."""
    flagged, clean = vit.scores([flagged_image(), clean_image()])
    assert flagged > THRESHOLD + 0.1 and clean < THRESHOLD - 0.1, (flagged, clean)
    assert vit.default_threshold == 0.5 and vit.label_index == 1
    again: ClassifierChecker = get_family("safety-vit").load("tiny", "cpu", None)
    assert again.scores([flagged_image(), clean_image()]) == [flagged, clean]  # seeded: same scores


def test_a_batch_scores_each_image_as_alone(vit: ClassifierChecker, sd: SdChecker) -> None:
    for checker in (vit, sd):
        batch = checker.scores(_images())
        alone = [checker.scores([image])[0] for image in _images()]
        assert batch == pytest.approx(alone, abs=1e-5)
        assert len(set(batch)) == len(batch)  # the images get different scores


def test_sd_scores_agree_with_diffusers_has_nsfw_concepts(sd: SdChecker) -> None:
    """score > 0 is exactly StableDiffusionSafetyChecker.forward's verdict (its default adjustment 0)."""
    images = _images()
    scores = sd.scores(images)
    pixels = sd.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    _, expected = sd.model(clip_input=pixels, images=np.zeros((len(images), 4, 4, 3)))
    assert [s > 0 for s in scores] == expected
    assert any(expected) and not all(expected)  # the tiny thresholds leave both verdicts in this set
    assert all(abs(s) > 0.002 for s in scores)  # diffusers rounds to 3 decimals; none is that close to 0


def _write_released_layout(family: str, repo: str, weights_dir: Path) -> Path:
    folder = weights_dir / repo
    folder.mkdir(parents=True)
    (write_tiny_sd if family == "safety-sd" else write_tiny_vit)(folder)
    return folder


def test_official_preset_loads_the_released_sd_layout(tmp_path: Path, sd: SdChecker) -> None:
    """The CompVis folder: pytorch_model.bin with transformers-4 key names (vision_model.vision_model.*,
    position_ids) and a CLIPFeatureExtractor preprocessor config; loaded through PULID_WEIGHTS_DIR."""
    from safetensors.torch import load_file

    folder = _write_released_layout("safety-sd", SD_CHECKER, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    legacy = {k.replace("vision_model.", "vision_model.vision_model.", 1): v for k, v in state.items()}
    legacy["vision_model.vision_model.embeddings.position_ids"] = torch.arange(17)[None]
    torch.save(legacy, folder / "pytorch_model.bin")
    processor = json.loads((folder / "preprocessor_config.json").read_text())
    old_style = {k: v for k, v in processor.items() if k != "image_processor_type"}
    old_style.update(feature_extractor_type="CLIPFeatureExtractor", size=32, crop_size=32)
    (folder / "preprocessor_config.json").write_text(json.dumps(old_style))

    official: SdChecker = get_family("safety-sd").load("official", "cpu", tmp_path)
    assert official.scores(_images()) == pytest.approx(sd.scores(_images()), abs=1e-5)
    assert get_family("safety-sd").load("auto", "cpu", tmp_path).scores(_images()[:1]) == pytest.approx(
        sd.scores(_images()[:1]), abs=1e-5
    )


def test_official_preset_loads_the_released_vit_layout(tmp_path: Path, vit: ClassifierChecker) -> None:
    _write_released_layout("safety-vit", VIT_NSFW, tmp_path)
    official: ClassifierChecker = get_family("safety-vit").load("official", "cpu", tmp_path)
    assert official.scores(_images()) == pytest.approx(vit.scores(_images()), abs=1e-6)


def test_missing_weights_name_the_download_command(tmp_path: Path) -> None:
    with pytest.raises(WeightsMissingError, match="pulid weights download --family safety-vit"):
        get_family("safety-vit").load("official", "cpu", tmp_path)
    tiny = get_family("safety-vit").load("auto", "cpu", tmp_path)  # auto without the files: tiny, warned
    assert tiny.scores([flagged_image()])[0] > THRESHOLD


def test_mismatching_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = _write_released_layout("safety-vit", VIT_NSFW, tmp_path)
    state = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in state.items() if "classifier" not in k}, str(folder / "model.safetensors"))
    with pytest.raises(WeightsMismatchError, match="missing key 'classifier.weight'"):
        get_family("safety-vit").load("official", "cpu", tmp_path)

    config = json.loads((folder / "config.json").read_text())
    config["id2label"] = {"0": "cat", "1": "dog"}
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(WeightsMismatchError, match="no 'nsfw' label"):
        get_family("safety-vit").load("official", "cpu", tmp_path)


@pytest.mark.parametrize(("family", "repo"), [("safety-sd", SD_CHECKER), ("safety-vit", VIT_NSFW)])
def test_weights_check_lists_the_checker_files(tmp_path: Path, family: str, repo: str) -> None:
    result = CliRunner().invoke(weights_app, ["check", "--family", family, "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert f"MISSING {repo}/config.json" in result.output
    assert f"pulid weights download --family {family}" in result.output
    for f in get_family(family).files():
        (tmp_path / f.repo / f.filename).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.repo / f.filename).write_bytes(b"x")
    result = CliRunner().invoke(weights_app, ["check", "--family", family, "--dir", str(tmp_path)])
    assert result.exit_code == 0 and f"{family}: all official weight files present" in result.output


def test_download_without_the_hub_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulid weights download` offline (or with no network) and nothing cached: exit 1, no traceback."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = CliRunner().invoke(weights_app, ["download", "--family", "safety-vit", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "downloading Falconsai/nsfw_image_detection/config.json" in result.output
    assert "download failed" in result.output
