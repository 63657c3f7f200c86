"""The content policy and the image screen every output image passes before storage (pure logic; the
whole path through HTTP is tests/integration/test_safety.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel

from pulid_server.config import Settings
from pulid_server.endpoints import UserInputError
from pulid_server.policy import ContentPolicy, KeyPolicy, blocked_term
from pulid_server.worker.safety import ImageScreen, mask


class Switchable(BaseModel):
    prompt: str = "a portrait"
    negative_prompt: str = ""
    enable_safety_checker: bool = True


class NoSwitch(BaseModel):  # like fal-ai/pulid: no enable_safety_checker in its schema
    prompt: str = "a portrait"


class RedChecker:
    """Test double: scores an image by its mean red level, so a test knows each verdict in advance."""

    name = "red"
    default_threshold = 0.5

    def __init__(self) -> None:
        self.calls = 0

    def scores(self, images: Sequence[Image.Image]) -> list[float]:
        self.calls += 1
        return [float(np.asarray(im.convert("RGB"))[..., 0].mean()) / 255 for im in images]


RED, BLUE = Image.new("RGB", (64, 32), (250, 10, 10)), Image.new("RGB", (64, 32), (10, 10, 250))


@pytest.mark.parametrize(
    ("mode", "inputs", "runs"),
    [
        ("optional", Switchable(), True),
        ("optional", Switchable(enable_safety_checker=False), False),
        ("optional", NoSwitch(), True),  # the operator's checker runs where the schema has no switch
        ("forced", Switchable(enable_safety_checker=False), True),
        ("forced", NoSwitch(), True),
        ("off", Switchable(), False),
        ("off", NoSwitch(), False),
    ],
)
def test_when_the_checker_runs(mode: str, inputs: BaseModel, runs: bool) -> None:
    policy = ContentPolicy.of("optional", "black", KeyPolicy.parse(mode, None))
    assert policy.checks(inputs) is runs


def test_key_overrides_and_their_text_form() -> None:
    assert ContentPolicy.of("optional", "black", KeyPolicy()) == ContentPolicy("optional", "black")
    assert ContentPolicy.of("off", "black", KeyPolicy("forced", "fail")) == ContentPolicy("forced", "fail")
    assert KeyPolicy.parse("inherit", "blur") == KeyPolicy(None, "blur")
    with pytest.raises(ValueError, match="safety_mode must be one of forced | optional | off | inherit"):
        KeyPolicy.parse("always", None)
    with pytest.raises(ValueError, match="safety_action must be one of black | blur | fail | inherit"):
        KeyPolicy.parse(None, "pixelate")


@pytest.mark.parametrize(
    ("prompt", "hit"),
    [
        ("a NUDE portrait", "nude"),
        ("portrait, Ｎｕｄｅ, oil", "nude"),  # fullwidth letters fold to the same word (NFKC)
        ("nude.", "nude"),
        ("the gore-fest poster", "gore fest"),  # a phrase matches across any separators
        ("a nudibranch on a reef", None),  # whole words only
        ("denuded hills", None),
        ("gore", None),  # part of a phrase is not the phrase
    ],
)
def test_prompt_blocklist(prompt: str, hit: str | None) -> None:
    found = blocked_term(Switchable(prompt=prompt), ("nude", " Gore  Fest ", ""))
    assert (found[0] if found else None) == ("prompt" if hit else None)
    if hit and found:
        assert found[1].replace("-", " ") == hit


def test_blocklist_reads_only_the_prompt() -> None:
    assert blocked_term(Switchable(negative_prompt="nude"), ("nude",)) is None
    assert blocked_term(Switchable(prompt="nude"), ()) is None


def test_masks_hide_the_image() -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8))
    black = mask(noisy, "black")
    assert black.size == noisy.size and black.mode == "RGB" and not np.asarray(black).any()
    assert mask(noisy.convert("RGBA"), "black").getpixel((3, 3)) == (0, 0, 0, 255)  # black, not transparent
    blurred = np.asarray(mask(noisy, "blur")).astype(float)
    assert blurred.shape == (96, 160, 3)
    assert np.abs(np.diff(blurred, axis=1)).mean() < 2  # neighbours nearly equal: no detail left
    assert np.abs(np.diff(np.asarray(noisy).astype(float), axis=1)).mean() > 50
    assert 100 < blurred.mean() < 155  # the colours survive, roughly


LINES: list[tuple[str, str]] = []  # what the screens log, for the assertions


def _screen(key: KeyPolicy, inputs: BaseModel, checker: RedChecker | None, **settings: object) -> ImageScreen:
    LINES.clear()
    return ImageScreen.for_job(
        Settings(**settings), checker, key, inputs, lambda m, lv: LINES.append((m, lv))
    )


def test_screen_flags_masks_and_annotates() -> None:
    checker = RedChecker()
    screen = _screen(KeyPolicy(), NoSwitch(), checker)
    stored = screen.screen([RED, BLUE])
    assert checker.calls == 1  # one batch
    assert screen.flags == [True, False] and screen.checked == 2 and screen.ran
    assert not np.asarray(stored[0]).any() and stored[1] is BLUE
    assert screen.annotate({"images": [], "seed": 1}) == {
        "images": [],
        "seed": 1,
        "has_nsfw_concepts": [True, False],
    }
    assert screen.annotate({"has_nsfw_concepts": [False]}) == {
        "has_nsfw_concepts": [False]
    }  # the runner's own
    assert ("safety checker: 1 of 2 image(s) flagged", "INFO") in LINES


def test_screen_threshold_and_blur_from_settings() -> None:
    screen = _screen(KeyPolicy(safety_action="blur"), NoSwitch(), RedChecker(), safety_threshold=0.99)
    assert screen.screen([RED])[0] is RED and screen.flags == [False]
    screen = _screen(KeyPolicy(safety_action="blur"), NoSwitch(), RedChecker(), safety_threshold=0.01)
    blurred = screen.screen([BLUE])
    assert screen.flags == [True] and blurred[0] is not BLUE and np.asarray(blurred[0]).any()


def test_screen_fail_stores_nothing() -> None:
    screen = _screen(KeyPolicy(safety_action="fail"), NoSwitch(), RedChecker())
    with pytest.raises(UserInputError) as err:
        screen.screen([BLUE, RED])
    assert err.value.error_type == "content_policy_violation" and err.value.loc == ("body",)
    assert "generated image(s) [1] flagged" in err.value.message
    assert screen.flags == [False, True] and screen.checked == 2  # counted for /metrics all the same


def test_screen_off_or_switched_off_checks_nothing() -> None:
    checker = RedChecker()
    for key, inputs in (
        (KeyPolicy("off"), NoSwitch()),
        (KeyPolicy(), Switchable(enable_safety_checker=False)),
    ):
        screen = _screen(key, inputs, checker)
        assert screen.screen([RED]) == [RED] and screen.flags == [False] and not screen.ran
        assert screen.annotate({"seed": 1}) == {"seed": 1}  # fal-ai/pulid gains the field only if checked
    assert checker.calls == 0
    screen = _screen(KeyPolicy(), NoSwitch(), None)  # no checker loaded, policy optional: nothing to do
    assert screen.screen([RED]) == [RED] and not screen.ran


def test_forced_policy_overrides_the_request_and_fails_closed_without_a_checker() -> None:
    screen = _screen(KeyPolicy("forced"), Switchable(enable_safety_checker=False), RedChecker())
    assert screen.screen([RED]) and screen.flags == [True]
    assert ("the safety checker is forced on by the operator's content policy", "WARN") in LINES
    with pytest.raises(RuntimeError, match="forces the safety checker, but this worker loads none"):
        _screen(KeyPolicy("forced"), NoSwitch(), None)
