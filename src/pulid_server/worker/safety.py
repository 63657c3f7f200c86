"""The safety checker between a runner and storage: every output image of a job goes through its
`ImageScreen` before it is written, which checks it (when the policy says so) and masks or refuses it.

So no runner can store a flagged image unmasked, and none has to repeat the policy: `JobContext.save_images`
screens, then stores. The screen keeps the flags for the runner (`JobContext.nsfw_flags`), for the output
(`has_nsfw_concepts`) and for /metrics (images checked and flagged).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageFilter

from pulid_server import failures
from pulid_server.endpoints import UserInputError
from pulid_server.policy import REQUEST_SWITCH, ContentPolicy, KeyPolicy, SafetyAction

if TYPE_CHECKING:
    from collections.abc import Callable

    from pulid_server.config import Settings
    from pulid_server.model.safety import SafetyChecker

OUTPUT_FIELD = "has_nsfw_concepts"  # fal's output field: one bool per image
BLUR_CELLS = 16  # a blurred image keeps this many cells along its long side, then is smoothed


def load_checker(settings: Settings) -> SafetyChecker | None:
    """The checker `Settings.safety_checker` names, loaded once per worker process; None when `off`."""
    if settings.safety_checker == "off":
        return None
    from pulid_server.model import get_family
    from pulid_server.model.safety import CHECKER_FAMILIES

    family = get_family(CHECKER_FAMILIES[settings.safety_checker])
    checker: SafetyChecker = family.load(settings.safety_model, settings.device, settings.weights_dir)
    return checker


def mask(image: Image.Image, action: SafetyAction) -> Image.Image:
    """A flagged image as it may be stored: black (fal's behaviour), or blurred past recognition."""
    if action == "blur":
        scale = BLUR_CELLS / max(image.size)
        cells = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        coarse = image.resize(cells, Image.Resampling.BOX).resize(image.size, Image.Resampling.BICUBIC)
        return coarse.filter(ImageFilter.GaussianBlur(max(image.size) / (2 * BLUR_CELLS)))
    return Image.new(image.mode, image.size, "black")  # opaque where the mode has alpha


@dataclass
class ImageScreen:
    """One job's screen. `checker` None: nothing is checked (no checker loaded, or the policy is off)."""

    checker: SafetyChecker | None = None
    threshold: float = 0.0
    action: SafetyAction = "black"
    log: Callable[[str, str], None] | None = None
    flags: list[bool] = field(default_factory=list)  # of every image screened so far, in order
    checked: int = 0

    @classmethod
    def for_job(
        cls,
        settings: Settings,
        checker: SafetyChecker | None,
        key: KeyPolicy,
        inputs: Any,
        log: Callable[[str, str], None],
    ) -> ImageScreen:
        policy = ContentPolicy.of(settings.safety_mode, settings.safety_action, key)
        if not policy.checks(inputs):
            return cls()
        if checker is None:
            if policy.mode == "forced":  # fail closed: never serve unchecked images a policy requires checked
                raise RuntimeError(
                    "the content policy forces the safety checker, but this worker loads none "
                    "(set PULID_SAFETY_CHECKER)"
                )
            return cls()
        if getattr(inputs, REQUEST_SWITCH, None) is False:
            log("the safety checker is forced on by the operator's content policy", "WARN")
        threshold = settings.safety_threshold
        return cls(checker, checker.default_threshold if threshold is None else threshold, policy.action, log)

    def screen(self, images: Sequence[Image.Image]) -> list[Image.Image]:
        """The images as they may be stored; UserInputError (content_policy_violation) if the policy
        says to fail on a flagged one."""
        if self.checker is None or not images:
            self.flags += [False] * len(images)
            return list(images)
        first = len(self.flags)
        flags = [score > self.threshold for score in self.checker.scores(images)]
        self.flags += flags
        self.checked += len(flags)
        flagged = [first + i for i, f in enumerate(flags) if f]
        if self.log is not None:
            self.log(f"safety checker: {len(flagged)} of {len(flags)} image(s) flagged", "INFO")
        if flagged and self.action == "fail":
            raise UserInputError(
                f"generated image(s) {flagged} flagged by the safety checker",
                ("body",),
                failures.CONTENT_POLICY,
            )
        return [mask(im, self.action) if f else im for im, f in zip(images, flags, strict=True)]

    @property
    def ran(self) -> bool:
        return self.checked > 0

    def annotate(self, output: Any) -> Any:
        """The runner's output with `has_nsfw_concepts` added when the checker ran and the endpoint's
        output has no such field (fal-ai/pulid); an endpoint that has it sets it from `nsfw_flags`."""
        if self.ran and isinstance(output, dict) and OUTPUT_FIELD not in output:
            return {**output, OUTPUT_FIELD: list(self.flags)}
        return output
