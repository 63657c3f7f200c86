"""The operator's content policy: when the image safety checker runs for a request, what happens to an
image it flags, and which prompts are refused at submit.

`Settings` holds the node's defaults (`safety_mode`, `safety_action`, `prompt_blocklist`); an API key may
override the mode and the action (`pulid keys create/policy --safety-mode --safety-action`). No torch here:
the API uses the blocklist, the worker the rest.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, cast, get_args

# forced: the checker runs on every image, whatever the request says; optional: the request's
# `enable_safety_checker` decides where the endpoint's schema has it (default true, as fal), else it runs;
# off: it never runs.
SafetyMode = Literal["forced", "optional", "off"]
# black: the flagged image is replaced by a black one (fal's behaviour); blur: by a heavily blurred copy;
# fail: the request fails with `content_policy_violation` and nothing is stored.
SafetyAction = Literal["black", "blur", "fail"]
SAFETY_MODES: tuple[str, ...] = get_args(SafetyMode)
SAFETY_ACTIONS: tuple[str, ...] = get_args(SafetyAction)
# the input field of fal's schemas that enables the checker per request (fal-ai/flux-pulid has it)
REQUEST_SWITCH = "enable_safety_checker"
PROMPT_FIELDS = ("prompt",)  # checked against the blocklist; never negative_prompt


@dataclass(frozen=True)
class KeyPolicy:
    """An API key's overrides; None leaves the node's Settings in charge."""

    safety_mode: SafetyMode | None = None
    safety_action: SafetyAction | None = None

    @classmethod
    def parse(cls, mode: str | None, action: str | None) -> KeyPolicy:
        """From text (CLI flags, database rows); None or "inherit" leaves the Settings in charge."""
        return cls(
            cast(SafetyMode | None, _choice("safety_mode", mode, SAFETY_MODES)),
            cast(SafetyAction | None, _choice("safety_action", action, SAFETY_ACTIONS)),
        )


def _choice(name: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is None or value == "inherit":
        return None
    if value not in allowed:
        raise ValueError(f"{name} must be one of {' | '.join((*allowed, 'inherit'))}, not {value!r}")
    return value


@dataclass(frozen=True)
class ContentPolicy:
    """What applies to one request: the key's overrides on top of the node's Settings."""

    mode: SafetyMode
    action: SafetyAction

    @classmethod
    def of(cls, default_mode: SafetyMode, default_action: SafetyAction, key: KeyPolicy) -> ContentPolicy:
        return cls(key.safety_mode or default_mode, key.safety_action or default_action)

    def checks(self, inputs: Any) -> bool:
        """Whether the checker runs for these (validated) inputs."""
        if self.mode != "optional":
            return self.mode == "forced"
        requested = getattr(inputs, REQUEST_SWITCH, None)
        return requested is not False  # schemas without the switch: the operator's checker runs


def blocked_term(inputs: Any, terms: tuple[str, ...]) -> tuple[str, str] | None:
    """(field, term) of the first prompt field of `inputs` that contains a blocklisted term, else None."""
    if not terms:
        return None
    pattern = _compile(terms)
    for name in PROMPT_FIELDS:
        value = getattr(inputs, name, None)
        if isinstance(value, str) and (match := pattern.search(_normalize(value))):
            return name, match.group(0)
    return None


def _normalize(text: str) -> str:
    # NFKC folds look-alike forms (fullwidth letters, ligatures) so they cannot slip past the list.
    return unicodedata.normalize("NFKC", text).casefold()


@lru_cache(maxsize=4)
def _compile(terms: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words or phrases, case-insensitive; words of a phrase may be separated by any non-letters."""
    alternatives = [
        r"\W+".join(re.escape(word) for word in _normalize(term).split()) for term in terms if term.strip()
    ]
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives or [r"(?!)"]) + r")(?!\w)")
