"""Model ids: which id names which model, and which models OpenAI serves on flex.

The one place these rules live: the router, the sync-tier executor, the price table and the
emulator all ask here, so they cannot disagree about a model id.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

__all__ = ["FLEX_MODELS", "is_flex_model", "is_variant_of", "offers_flex"]

#: OpenAI models that accept ``service_tier="flex"`` (dated variants included). Anthropic has no flex.
FLEX_MODELS: Mapping[str, tuple[str, ...]] = {
    "openai": ("gpt-6-sol", "gpt-6.1-sol", "gpt-6-luna"),
    "anthropic": (),
}

# A known model id followed by a version suffix (date, number or alias) names the same model:
# "claude-sonnet-5-5-20261001", "gpt-6-luna-2026-09-01", "gpt-6-luna@2026". Anything else (e.g.
# "gpt-6-sol-mini") is a different model and must not inherit a price or a tier from its prefix.
VERSION_SUFFIX = re.compile(r"^[-@](?:\d[\d-]*|latest)$")


def is_variant_of(model: str, known: str) -> bool:
    """Whether ``model`` is ``known`` itself or ``known`` with a version suffix."""
    return model == known or (
        model.startswith(known) and VERSION_SUFFIX.match(model[len(known) :]) is not None
    )


def offers_flex(model: str, flex_models: Iterable[str]) -> bool:
    """Whether ``model`` is one of ``flex_models`` or a versioned variant of one."""
    return any(is_variant_of(model, known) for known in flex_models)


def is_flex_model(provider: str, model: str) -> bool:
    """Whether ``provider`` serves ``model`` (or a dated variant of it) on the flex tier."""
    return offers_flex(model, FLEX_MODELS.get(provider, ()))
