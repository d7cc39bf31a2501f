"""What changed between two experiment configurations, section by section, for an approver.

`config_diff` names each changed section of the configuration (offers, eligibility rules,
traffic split, A/B arm, explorer, caps, reward, ...) with a line per changed value, keyed by
offer for the offers; `unified_diff` is the same change as a unified diff of the JSON, the
second view for those who want every character.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any, Final

#: Sections in the order an approver reads them, with their headings.
SECTION_TITLES: Final[dict[str, str]] = {
    "name": "Name",
    "description": "Description",
    "offers": "Offers",
    "rules": "Eligibility rules",
    "traffic": "Traffic split",
    "ab_arm": "A/B arm",
    "explorer": "Explorer",
    "probability_floor": "Probability floor",
    "include_no_offer": "No-offer arm",
    "fallback_offer": "Fallback offer",
    "frequency_caps": "Frequency caps",
    "reward": "Reward",
    "learning": "Learning",
    "consent_required": "Consent",
    "protected_attributes": "Protected attributes",
    "surfaces": "Surfaces",
    "context_fields": "Context fields",
    "segments": "Segments",
    "guardrails": "Guardrails",
}


@dataclass(frozen=True)
class Change:
    """One changed value: `path` inside its section, `before` and `after` as short text
    (None when the value did not exist on that side)."""

    path: str
    before: str | None
    after: str | None

    @property
    def kind(self) -> str:
        """`added`, `removed` or `changed`."""
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


@dataclass(frozen=True)
class SectionDiff:
    """The changes of one section of the configuration."""

    section: str
    title: str
    changes: list[Change] = field(default_factory=list)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path (lists of scalars stay whole; lists of mappings by index)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key in value:
            out.update(_flatten(value[key], f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: value}
    if isinstance(value, list) and any(isinstance(item, dict) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}[{index}]"))
        return out or {prefix: value}
    return {prefix: value}


def _compare(before: Any, after: Any, prefix: str = "") -> list[Change]:
    old, new = _flatten(before, prefix), _flatten(after, prefix)
    return [
        Change(
            path=path,
            before=_text(old[path]) if path in old else None,
            after=_text(new[path]) if path in new else None,
        )
        for path in sorted(old.keys() | new.keys())
        if old.get(path, ...) != new.get(path, ...)
    ]


def _by_key(items: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(items, list):
        return {}
    return {str(item.get("key")): item for item in items if isinstance(item, dict)}


def config_diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[SectionDiff]:
    """The changed sections from `before` (None: nothing yet, everything is new) to `after`.

    Offers are compared by key (an offer added, removed, or changed field by field); their
    eligibility expressions are listed apart under "Eligibility rules", since they are what
    a compliance reviewer checks first.
    """
    old = before or {}
    sections: dict[str, list[Change]] = {}
    old_offers, new_offers = _by_key(old.get("offers")), _by_key(after.get("offers"))
    offer_changes: list[Change] = []
    rule_changes: list[Change] = []
    for key in sorted(old_offers.keys() | new_offers.keys(), key=str):
        a, b = old_offers.get(key), new_offers.get(key)
        if a is None or b is None:
            offer_changes.append(
                Change(
                    path=key,
                    before=None if a is None else str(a.get("name", key)),
                    after=None if b is None else str(b.get("name", key)),
                )
            )
        else:
            rest_a = {k: v for k, v in a.items() if k != "eligibility"}
            rest_b = {k: v for k, v in b.items() if k != "eligibility"}
            offer_changes.extend(_compare(rest_a, rest_b, key))
        rule_a = None if a is None else a.get("eligibility", "")
        rule_b = None if b is None else b.get("eligibility", "")
        if rule_a != rule_b:
            rule_changes.append(
                Change(
                    path=key,
                    before=None if a is None else (rule_a or "always eligible"),
                    after=None if b is None else (rule_b or "always eligible"),
                )
            )
    if [o.get("key") for o in old.get("offers") or []] != [
        o.get("key") for o in after.get("offers") or []
    ] and old_offers.keys() == new_offers.keys():
        offer_changes.append(
            Change(path="order", before=_text(list(old_offers)), after=_text(list(new_offers)))
        )
    sections["offers"] = offer_changes
    sections["rules"] = rule_changes
    for key in (old.keys() | after.keys()) - {"offers", "key"}:
        if old.get(key) != after.get(key):
            sections[key] = _compare(old.get(key), after.get(key))
    order = list(SECTION_TITLES)
    return [
        SectionDiff(section=name, title=SECTION_TITLES.get(name, name), changes=changes)
        for name, changes in sorted(
            sections.items(), key=lambda item: order.index(item[0]) if item[0] in order else 99
        )
        if changes
    ]


def unified_diff(
    before: dict[str, Any] | None,
    after: dict[str, Any],
    *,
    before_label: str = "before",
    after_label: str = "after",
) -> list[str]:
    """The change as a unified diff of the pretty-printed JSON (lines without newlines)."""
    old = [] if before is None else json.dumps(before, indent=2, sort_keys=True).splitlines()
    new = json.dumps(after, indent=2, sort_keys=True).splitlines()
    return list(
        difflib.unified_diff(old, new, fromfile=before_label, tofile=after_label, lineterm="")
    )


__all__ = ["SECTION_TITLES", "Change", "SectionDiff", "config_diff", "unified_diff"]
