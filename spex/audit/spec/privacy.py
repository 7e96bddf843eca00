"""``privacy.redact_text``: what the audit may record of a spec and of a prepared subject.

The spec itself keeps the text (the run needs it); these functions give the copies that the metadata
DB, MLflow and the reports get. Which parts of a subject and of the options hold text is each lens's
to say (:attr:`spex.lenses.registration.LensRegistration.subject_text_fields`, ``redact_options``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spex.lenses import registry

REDACTED = "[redacted]"


def _redacted(value: Any) -> Any:
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    if isinstance(value, dict):  # a nested section of a subject (the context lens's ``expect``)
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, str):
        return REDACTED
    return value


def redact_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec dict (``public_dict``) as it may be stored: when ``privacy.redact_text`` is on, subjects'
    texts (prompt, target, prompts, answers, text; a classifier's integer class stays), the system
    prompt, the heads lens' reference prompts and inline training texts become ``[redacted]``."""
    spec = dict(spec)
    if not (spec.get("privacy") or {}).get("redact_text"):
        return spec
    lens = registry.get(spec["lens"])
    spec["subjects"] = [{k: (_redacted(v) if k in lens.subject_text_fields else v) for k, v in s.items()}
                        for s in spec.get("subjects") or []]
    spec["lens_options"] = lens.redact_options(dict(spec.get("lens_options") or {}), _redacted)
    return spec


def redact_subject_info(info: dict[str, Any]) -> dict[str, Any]:
    """A prepared subject (:func:`spex.audit.plan.prepare_subject`) without its text: labels ``f0..``, the view's text dropped
    (the features' offsets stay), the scored target / response and text-bearing descriptions removed.
    The heads lens keeps its labels and grid: head names (``L0H3``) carry no text of the prompts."""
    n = int(info["n"])
    view = dict(info.get("view") or {})
    describe = {k: v for k, v in (info.get("describe") or {}).items()
                if k not in ("prompt", "prompts", "system", "target", "targets", "answers", "reference", "replacement",
                             "target_text", "texts", "template", "question")}
    if view.get("kind") == "grid":
        return {**info, "target": REDACTED if info.get("target") is not None else None, "describe": describe}
    if "text" in view:
        view["text"] = None
    if "target" in view:
        view["target"] = REDACTED
    if "question" in view:
        view["question"] = REDACTED
    if "documents" in view:
        view["documents"] = [REDACTED] * len(view["documents"])
    if "examples" in view:
        view["examples"] = [{"text": REDACTED, "label": e.get("label")} for e in view["examples"]]
    view["redacted"] = True
    return {**info, "labels": [f"f{i}" for i in range(n)], "view": view,
            "target": REDACTED if info.get("target") is not None else None, "describe": describe}
