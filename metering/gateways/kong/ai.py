"""Kong AI Gateway sections into the data of ``llm`` events: per section that counted
tokens, one event for the tokens sent to the model (``input``, the prompt) and one for
those it returned (``output``, the completion), each only when not zero. What describes
the call as a whole (total tokens, Kong's cost estimate, the model's latency) rides on
the call's first event only, so that a sum over llm events counts each call once."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

from metering.gateways.kong.values import (
    MAX_KEY,
    KongLogError,
    Reason,
    as_dict,
    count,
    decimal_text,
    number,
    text,
)

LLM_TYPE = "llm"
# The ``direction`` of an llm event: the tokens sent to the model (prompt) or returned by
# it (completion), priced apart by every LLM provider.
INPUT = "input"
OUTPUT = "output"


def llm_events_data(
    ai: Any, *, event_id: str, where: dict[str, Any]
) -> list[tuple[str, dict[str, Any]]]:
    """(id, data) of each ``llm`` event of a log's ``ai`` object; ``event_id`` is the
    log's request event id, ``where`` the route, path, service and status every event
    names. Raises ``KongLogError`` for token counts that are not whole numbers."""
    events = []
    for plugin, usage, meta in _ai_sections(ai):
        prompt = _tokens(usage, ("prompt_tokens", "prompt_token"), plugin) or 0
        completion = _tokens(usage, ("completion_tokens", "completion_token"), plugin) or 0
        if not prompt and not completion:
            continue  # an error or cache hit that used no tokens is no LLM usage
        total = _tokens(usage, ("total_tokens",), plugin)
        call = {**_call_model(meta), "plugin": text(plugin), **where}
        whole_call = {
            "total_tokens": total or prompt + completion,
            "cost": decimal_text(usage.get("cost")),
            "llm_latency_ms": number(meta.get("llm_latency")),
        }
        # Each direction also keeps the field it was read from (prompt_tokens,
        # completion_tokens), which meters made before the direction events still sum.
        # A direction without tokens (an embeddings call's output) has no event.
        directions = [
            (direction, tokens, field)
            for direction, tokens, field in (
                (INPUT, prompt, "prompt_tokens"),
                (OUTPUT, completion, "completion_tokens"),
            )
            if tokens
        ]
        for position, (direction, tokens, field) in enumerate(directions):
            data = {"tokens": tokens, "direction": direction, field: tokens, **call}
            if position == 0:
                data |= whole_call
            events.append((_llm_event_id(event_id, plugin, direction), data))
    return events


def _call_model(meta: dict[str, Any]) -> dict[str, Any]:
    """The model asked for (else the one that answered), the one that answered, and the
    provider."""
    request_model = text(meta.get("request_model"))
    response_model = text(meta.get("response_model"))
    if request_model in (None, "UNSPECIFIED"):
        request_model = response_model
    return {
        "model": request_model,
        "response_model": response_model,
        "provider": text(meta.get("provider_name")),
    }


def _ai_sections(ai: Any) -> Iterable[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(plugin namespace, usage, meta) of each AI plugin section that logged usage, in a
    fixed order so the events of a re-sent log are the same."""
    if not isinstance(ai, dict):
        return []
    sections = []
    for plugin in sorted(ai):
        section = ai[plugin]
        if isinstance(section, dict) and isinstance(section.get("usage"), dict):
            sections.append((plugin, section["usage"], as_dict(section.get("meta"))))
    return sections


def _tokens(usage: dict[str, Any], names: tuple[str, ...], plugin: str) -> int | None:
    """The first of ``names`` that ``usage`` holds, as a count of tokens."""
    for name in names:
        value = usage.get(name)
        if value is None:
            continue
        tokens = count(value)
        if tokens is None:
            raise KongLogError(
                Reason.BAD_TOKENS, f"ai.{plugin}.usage.{name}: must be a whole number of tokens"
            )
        return tokens
    return None


def _llm_event_id(event_id: str, plugin: str, direction: str) -> str:
    """The request's id, the AI section's name and the direction: one LLM event per
    plugin, direction and request, the same each time Kong sends the log again."""
    llm_id = f"{event_id}:llm:{plugin}:{direction}"
    if len(llm_id) > MAX_KEY or "\x00" in plugin:
        plugin_hash = hashlib.sha256(plugin.encode()).hexdigest()[:16]
        llm_id = f"{event_id}:llm:{plugin_hash}:{direction}"
    return llm_id
