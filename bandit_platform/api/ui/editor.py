"""The experiment editor and the rule tester in the web UI.

- `/ui/experiments/new` and `/ui/experiments/{key}/edit` (editors and admins): one
  server-rendered form for the whole configuration schema. Simple values are inputs; nested
  lists (context fields, segments, variants, caps, guardrails, ...) are JSON text areas. Every
  input is named by its JSON path (`traffic.holdout`, `offers[2].eligibility`), so an error's
  path (from msgspec or from `validate_config`) finds its input: the longest input path that
  is a prefix of the error's path. Errors whose path names no input go to the summary at the
  top. Saving calls `ExperimentService.create` or `.propose` (a running experiment's change
  becomes a pending change request).
- `/ui/experiments/{key}/rules` (anyone signed in): the rule tester. A pasted sample context
  is checked against the allow-list and evaluated with the platform's own expressions; it is
  only echoed back in the response, never stored and never logged.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Final

from litestar import Controller, Request, Router, get, post
from litestar.enums import RequestEncodingType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.params import Body, FromPath
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from bandit_platform.api.ui.auth import ui_guard, ui_session
from bandit_platform.api.ui.pages import (
    PAGE_HEADERS,
    _domain_error,
    _forbidden,
    _not_signed_in,
    _page,
)
from bandit_platform.domain.config import (
    CONTEXT_SECTIONS,
    CompiledExperiment,
    config_from_builtins,
    decode_config,
    explorer_catalogue,
    validate_config,
)
from bandit_platform.domain.errors import DomainError, InvalidInput
from bandit_platform.domain.expressions import RuleExplanation, explain_rule
from bandit_platform.domain.users import Permission
from bandit_platform.features.context import validate_context
from bandit_platform.service.experiments import ExperimentService

FormData = Annotated[dict[str, Any], Body(media_type=RequestEncodingType.URL_ENCODED)]

#: Inputs holding a number.
NUMBER_FIELDS: Final = (
    "traffic.holdout",
    "traffic.ab",
    "traffic.bandit",
    "probability_floor",
    "reward.attribution_window_hours",
    "reward.default_reward",
)
#: Inputs holding a number or nothing.
OPTIONAL_NUMBER_FIELDS: Final = ("reward.reward_wait_hours",)
#: Inputs holding text.
TEXT_FIELDS: Final = ("key", "name", "description", "ab_arm.kind", "reward.name")
#: Inputs holding text or nothing.
OPTIONAL_TEXT_FIELDS: Final = ("ab_arm.default_offer", "fallback_offer", "reward.aggregation")
#: Inputs holding a list of keys, separated by commas or new lines.
LIST_FIELDS: Final = ("surfaces", "protected_attributes")
#: Check boxes.
BOOL_FIELDS: Final = ("include_no_offer", "consent_required")
#: Text areas holding a JSON value.
JSON_FIELDS: Final = (
    "context_fields",
    "segments",
    "ab_arm.rules",
    "reward.event_weights",
    "reward.report_horizons",
    "learning",
    "frequency_caps",
    "guardrails",
)
#: Each offer's inputs, by kind.
OFFER_TEXT: Final = ("key", "product", "name", "description", "eligibility")
OFFER_JSON: Final = ("features", "variants")
#: Error paths that name a whole section: the error shows at the top of its fieldset.
GROUPS: Final = ("traffic", "ab_arm", "explorer", "reward", "offers")
#: The "edit as JSON" text area (its own form: the whole document).
DOCUMENT: Final = "document"
#: What a new experiment starts from.
STARTER: Final[dict[str, Any]] = {
    "key": "",
    "name": "",
    "description": "",
    "surfaces": ["home_feed"],
    "context_fields": [],
    "offers": [{"key": "", "product": "", "name": "", "variants": [{"key": "default"}]}],
    "traffic": {"holdout": 10.0, "ab": 20.0, "bandit": 70.0},
    "reward": {"event_weights": {"click": 0.1, "apply": 0.5, "convert": 1.0}},
}
#: Flash messages the experiment pages show after a redirect (`?flash=`).
FLASH: Final = {
    "created": "Experiment created as a draft: it needs approval before it can start.",
    "updated": "Saved as a new version (a draft: it needs approval before it can start).",
    "unchanged": "Nothing changed.",
    "proposed": "The experiment is live: your change is a change request awaiting approval.",
}


def field_id(path: str) -> str:
    """The HTML id of the input for a JSON path (`offers[2].key` -> `f-offers-2-key`)."""
    return "f-" + re.sub(r"[^A-Za-z0-9]+", "-", path).strip("-")


def _parent(path: str) -> str:
    """The path one level up (`a.b[2]` -> `a.b`, `a.b` -> `a`, `a` -> ``)."""
    match = re.match(r"^(.*?)(?:\.[^.\[\]]+|\[\d+\])$", path)
    return match.group(1) if match else ""


def _short(message: str) -> str:
    """A msgspec message without its path suffix (the field shows where)."""
    return message.split(" - at `", 1)[0]


@dataclass
class EditorForm:
    """The editor's state: the raw input per path, the offer rows and the errors.

    Attributes:
        values: raw text of every input, by JSON path (check boxes: "yes" or "").
        offers: how many offer rows the form shows.
        errors: message per input path (or section).
        summary: every error as (message, path, html id or None), for the top of the form.
        document: the whole configuration as JSON, for the "edit as JSON" text area.
    """

    values: dict[str, str]
    offers: int
    errors: dict[str, str] = field(default_factory=dict)
    summary: list[tuple[str, str, str | None]] = field(default_factory=list)
    document: str = ""

    def targets(self) -> set[str]:
        """Every path an error can be shown at."""
        return set(self.values) | set(GROUPS)

    def add_error(self, path: str | None, message: str) -> None:
        """Put `message` next to the input that `path` falls in, and in the summary."""
        kind = self.values.get("explorer.kind", "")
        target = path or ""
        if target.startswith("explorer.") and f"explorer.{kind}.{target[9:]}" in self.values:
            target = f"explorer.{kind}.{target[9:]}"
        elif target == "explorer":
            target = "explorer.kind"
        targets = self.targets()
        while target and target not in targets:
            target = _parent(target)
        if target:
            self.errors.setdefault(target, message)
        self.summary.append((message, path or "", field_id(target) if target else None))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def form_from_config(document: Mapping[str, Any]) -> EditorForm:
    """The editor's inputs for a stored configuration (or the starter document)."""

    def get(path: str) -> Any:
        node: Any = document
        for part in path.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        return node

    values: dict[str, str] = {}
    for path in NUMBER_FIELDS + OPTIONAL_NUMBER_FIELDS + TEXT_FIELDS + OPTIONAL_TEXT_FIELDS:
        values[path] = _text(get(path))
    values.setdefault("ab_arm.kind", "")
    values["ab_arm.kind"] = values["ab_arm.kind"] or "uniform"
    values["reward.name"] = values["reward.name"] or "primary"
    values["reward.aggregation"] = values["reward.aggregation"] or "sum"
    values["reward.attribution_window_hours"] = values["reward.attribution_window_hours"] or "168.0"
    values["reward.default_reward"] = values["reward.default_reward"] or "0.0"
    values["probability_floor"] = values["probability_floor"] or "0.01"
    for path in LIST_FIELDS:
        values[path] = ", ".join(get(path) or [])
    values["include_no_offer"] = _text(document.get("include_no_offer", True))
    values["consent_required"] = _text(document.get("consent_required", True))
    defaults: dict[str, Any] = {
        "context_fields": [],
        "segments": [],
        "ab_arm.rules": [],
        "reward.event_weights": {},
        "reward.report_horizons": [],
        "learning": {},
        "frequency_caps": [],
        "guardrails": [],
    }
    for path in JSON_FIELDS:
        found = get(path)
        values[path] = _json_text(found if found is not None else defaults[path])
    explorer = dict(document.get("explorer") or {"kind": "epsilon_greedy"})
    values["explorer.kind"] = str(explorer.get("kind", "epsilon_greedy"))
    for entry in explorer_catalogue():
        for name, default in entry["parameters"].items():
            chosen = entry["kind"] == values["explorer.kind"] and name in explorer
            values[f"explorer.{entry['kind']}.{name}"] = _text(
                explorer[name] if chosen else default
            )
    offers = list(document.get("offers") or [])
    for index, offer in enumerate(offers):
        values.update(_offer_values(index, offer))
    return EditorForm(values=values, offers=len(offers), document=_json_text(document))


def _offer_values(index: int, offer: Mapping[str, Any]) -> dict[str, str]:
    values = {f"offers[{index}].{name}": _text(offer.get(name)) for name in OFFER_TEXT}
    values[f"offers[{index}].features"] = _json_text(offer.get("features") or {})
    values[f"offers[{index}].variants"] = _json_text(offer.get("variants") or [{"key": "default"}])
    if not values[f"offers[{index}].eligibility"]:
        values[f"offers[{index}].eligibility"] = "true"
    return values


def form_from_post(data: Mapping[str, Any]) -> tuple[EditorForm, str]:
    """The editor's state from a submitted form, and the action asked for.

    Actions: `save`, `save_json` (the whole document), `add_offer`, `remove_offer:<index>`.
    """

    def text(name: str) -> str:
        value = data.get(name, "")
        if isinstance(value, list):
            value = value[-1] if value else ""
        return str(value)

    values: dict[str, str] = {}
    for path in (
        NUMBER_FIELDS
        + OPTIONAL_NUMBER_FIELDS
        + TEXT_FIELDS
        + OPTIONAL_TEXT_FIELDS
        + LIST_FIELDS
        + BOOL_FIELDS
        + JSON_FIELDS
    ):
        values[path] = text(path)
    values["explorer.kind"] = text("explorer.kind")
    for entry in explorer_catalogue():
        for name in entry["parameters"]:
            path = f"explorer.{entry['kind']}.{name}"
            values[path] = text(path)
    try:
        count = min(max(int(text("offer_count") or "0"), 0), 100)
    except ValueError:
        count = 0
    action = text("action") or "save"
    rows = [
        {name: text(f"offers[{index}].{name}") for name in OFFER_TEXT + OFFER_JSON}
        for index in range(count)
    ]
    if action == "add_offer":
        rows.append(
            {
                **dict.fromkeys(OFFER_TEXT, ""),
                "eligibility": "true",
                "features": "{}",
                "variants": _json_text([{"key": "default"}]),
            }
        )
    elif action.startswith("remove_offer:"):
        with contextlib.suppress(ValueError, IndexError):
            del rows[int(action.split(":", 1)[1])]
    for index, row in enumerate(rows):
        for name, value in row.items():
            values[f"offers[{index}].{name}"] = value
    return EditorForm(values=values, offers=len(rows), document=text(DOCUMENT)), action


def _number(form: EditorForm, path: str, *, optional: bool = False) -> Any:
    raw = form.values.get(path, "").strip()
    if not raw:
        if optional:
            return None
        form.add_error(path, "enter a number")
        return None
    try:
        return int(raw)
    except ValueError:
        pass
    try:
        number = float(raw)
    except ValueError:
        form.add_error(path, f"{raw[:40]!r} is not a number")
        return None
    if not math.isfinite(number):
        form.add_error(path, "must be a finite number")
        return None
    return number


def _json(form: EditorForm, path: str) -> Any:
    raw = form.values.get(path, "").strip()
    try:
        return json.loads(raw)
    except ValueError as exc:
        form.add_error(path, f"not valid JSON: {exc}")
        return None


def _set(document: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = document
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def document_from_form(form: EditorForm) -> dict[str, Any] | None:
    """The configuration document the inputs describe, or None after input errors (which
    are recorded on `form`)."""
    document: dict[str, Any] = {}
    for path in TEXT_FIELDS:
        _set(document, path, form.values.get(path, "").strip())
    for path in OPTIONAL_TEXT_FIELDS:
        raw = form.values.get(path, "").strip()
        if raw:
            _set(document, path, raw)
        elif path != "reward.aggregation":
            _set(document, path, None)
    for path in LIST_FIELDS:
        raw = form.values.get(path, "")
        _set(document, path, [item for item in re.split(r"[,\s]+", raw) if item])
    for path in BOOL_FIELDS:
        _set(document, path, bool(form.values.get(path)))
    for path in NUMBER_FIELDS:
        _set(document, path, _number(form, path))
    for path in OPTIONAL_NUMBER_FIELDS:
        _set(document, path, _number(form, path, optional=True))
    for path in JSON_FIELDS:
        _set(document, path, _json(form, path))
    kind = form.values.get("explorer.kind", "")
    explorer: dict[str, Any] = {"kind": kind}
    for entry in explorer_catalogue():
        if entry["kind"] == kind:
            for name in entry["parameters"]:
                explorer[name] = _number(form, f"explorer.{kind}.{name}")
    document["explorer"] = explorer
    offers = []
    for index in range(form.offers):
        offer: dict[str, Any] = {}
        for name in OFFER_TEXT:
            value = form.values.get(f"offers[{index}].{name}", "")
            offer[name] = value if name == "description" else value.strip()
        for name in OFFER_JSON:
            offer[name] = _json(form, f"offers[{index}].{name}")
        offers.append(offer)
    document["offers"] = offers
    return None if form.errors else document


def record_error(form: EditorForm, action: str, exc: DomainError) -> None:
    """Show `exc` next to its input, or in "edit as JSON" mode next to the document (with
    its JSON path); and in the summary either way."""
    message = _short(exc.message)
    if action != "save_json":
        form.add_error(exc.field, message)
        return
    form.errors.setdefault(DOCUMENT, f"{exc.field}: {message}" if exc.field else message)
    form.summary.append((message, exc.field or "", field_id(DOCUMENT)))


def check_document(form: EditorForm, text: str) -> CompiledExperiment | None:
    """Decode and validate a whole configuration document ("edit as JSON"); None (the error
    recorded on `form` at `document`, and in the summary with its JSON path) if invalid."""
    try:
        return validate_config(decode_config(text))
    except InvalidInput as exc:
        record_error(form, "save_json", exc)
        return None


def check_form(form: EditorForm, action: str = "save") -> CompiledExperiment | None:
    """Build and validate the configuration; None (errors recorded on `form`) if invalid.

    With `action="save_json"` the whole-document text area is decoded instead of the inputs.
    """
    if action == "save_json":
        return check_document(form, form.document)
    document = document_from_form(form)
    if document is None:
        return None
    try:
        return validate_config(config_from_builtins(document))
    except InvalidInput as exc:
        form.add_error(exc.field, _short(exc.message))
        return None


# --------------------------------------------------------------------------------------------
# Rule tester
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OfferVerdict:
    """One offer's eligibility for the sample context."""

    key: str
    name: str
    eligible: bool
    explanation: RuleExplanation


@dataclass(frozen=True)
class RuleTest:
    """The rule tester's answer for one sample context.

    Attributes:
        offers: each offer's verdict, in configuration order.
        segments: each segment's rule and whether the customer falls in it.
        dropped: context fields left out, with the reason (protected, not on the
            allow-list, wrong type).
        used: the context values the rules saw.
    """

    offers: list[OfferVerdict]
    segments: list[tuple[str, RuleExplanation]]
    dropped: list[tuple[str, str]]
    used: dict[str, Any]


def _sections(sample: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A sample context as `{section: {name: value}}`; dotted top-level keys are accepted."""
    sections: dict[str, dict[str, Any]] = {}
    for name, value in sample.items():
        if "." in name:
            section, rest = name.split(".", 1)
            sections.setdefault(section, {})[rest] = value
        elif isinstance(value, Mapping):
            sections.setdefault(name, {}).update(value)
        else:
            sections.setdefault(name, {})
    return sections


def run_rule_test(compiled: CompiledExperiment, sample: Mapping[str, Any]) -> RuleTest:
    """Evaluate every offer's eligibility and every segment for a sample context.

    Fields a decision would refuse or drop are reported and left out, so the rest can still
    be tested; what remains passes through `validate_context`, as on the decision path.
    """
    dropped: list[tuple[str, str]] = []
    kept: dict[str, dict[str, Any]] = {}
    for section, fields in _sections(sample).items():
        if section not in CONTEXT_SECTIONS:
            dropped.append((section, f"unknown section; expected one of {list(CONTEXT_SECTIONS)}"))
            continue
        for name, value in fields.items():
            full = f"{section}.{name}"
            if full in compiled.protected:
                dropped.append((full, "protected attribute: dropped before any rule or model"))
                continue
            if full not in compiled.context_fields:
                dropped.append(
                    (full, "not in the context allow-list (a decision would be refused)")
                )
                continue
            try:
                validate_context({section: {name: value}}, compiled)
            except InvalidInput as exc:
                dropped.append((full, f"{exc.message} (a decision would be refused)"))
                continue
            kept.setdefault(section, {})[name] = value
    context = validate_context(kept, compiled).values
    offers = [
        OfferVerdict(
            key=offer.key,
            name=offer.name,
            eligible=compiled.eligibility[offer.key].evaluate(context),
            explanation=explain_rule(compiled.eligibility[offer.key], context),
        )
        for offer in compiled.config.offers
    ]
    segments = [(key, explain_rule(rule, context)) for key, rule in compiled.segments.items()]
    return RuleTest(offers=offers, segments=segments, dropped=dropped, used=dict(context))


def _sample_example(compiled: CompiledExperiment) -> str:
    """A sample context with one plausible value per allowed field, for the text area."""
    example: dict[str, dict[str, Any]] = {}
    for name, spec in compiled.context_fields.items():
        section, rest = name.split(".", 1)
        value: Any = {"number": 0, "boolean": False, "category": "", "categories": []}[spec.type]
        if spec.values:
            value = spec.values[0] if spec.type == "category" else spec.values[:1]
        example.setdefault(section, {})[rest] = value
    return json.dumps(example, indent=2)


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------


def _editor_page(
    request: Request[Any, Any, Any],
    form: EditorForm,
    *,
    key: str | None,
    status_code: int = 200,
    comment: str = "",
) -> Template:
    service = ExperimentService(request.app.state.platform)
    view = service.get(key) if key is not None else None
    return _page(
        request,
        "editor.html",
        status_code=status_code,
        form=form,
        view=view,
        explorers=explorer_catalogue(),
        field_id=field_id,
        comment=comment,
        action_path=f"/ui/experiments/{key}/edit" if key else "/ui/experiments/new",
    )


def _complete(form: EditorForm, action: str, base: Mapping[str, Any]) -> EditorForm:
    """Fill the half of the page that was not submitted: after "edit as JSON" the inputs show
    the typed document (when it is a JSON object), after the inputs the text area shows
    `base` (the stored configuration or the starter)."""
    if action != "save_json":
        if not form.document:
            form.document = _json_text(base)
        return form
    try:
        parsed = json.loads(form.document)
        filled = form_from_config(parsed if isinstance(parsed, dict) else base)
    except (ValueError, TypeError, AttributeError):
        filled = form_from_config(base)
    filled.errors, filled.summary, filled.document = form.errors, form.summary, form.document
    return filled


def _see(path: str) -> Redirect:
    return Redirect(path=path, status_code=HTTP_303_SEE_OTHER)


class EditorPages(Controller):
    """Create and edit experiments (editors and admins)."""

    path = "/experiments"
    opt = {"permission": Permission.EDIT_EXPERIMENTS}

    @get("/new", sync_to_thread=True, include_in_schema=False)
    def new(self, request: Request[Any, Any, Any]) -> Template:
        """An empty form for a new experiment."""
        return _editor_page(request, form_from_config(STARTER), key=None)

    @post("/new", sync_to_thread=True, include_in_schema=False)
    def create(self, request: Request[Any, Any, Any], data: FormData) -> Template | Redirect:
        """Create the experiment (a draft) or show the form again with its errors."""
        form, action = form_from_post(data)
        if action not in ("save", "save_json"):
            return _editor_page(request, _complete(form, action, STARTER), key=None)
        compiled = check_form(form, action)
        if compiled is None:
            return _editor_page(
                request, _complete(form, action, STARTER), key=None, status_code=422
            )
        service = ExperimentService(request.app.state.platform)
        try:
            view = service.create(compiled.config, actor=ui_session(request).user.actor)
        except DomainError as exc:
            record_error(form, action, exc)
            return _editor_page(
                request, _complete(form, action, STARTER), key=None, status_code=exc.status_hint
            )
        return _see(f"/ui/experiments/{view.key}?flash=created")

    @get("/{key:str}/edit", sync_to_thread=True, include_in_schema=False)
    def edit(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """The form with the experiment's current configuration."""
        view = ExperimentService(request.app.state.platform).get(key)
        return _editor_page(request, form_from_config(view.config), key=key)

    @post("/{key:str}/edit", sync_to_thread=True, include_in_schema=False)
    def update(
        self, request: Request[Any, Any, Any], key: FromPath[str], data: FormData
    ) -> Template | Redirect:
        """Save a new version (draft) or, for a live experiment, propose a change."""
        form, action = form_from_post(data)
        comment = str(data.get("comment", ""))
        service = ExperimentService(request.app.state.platform)
        stored = service.get(key)
        before = stored.version
        if action not in ("save", "save_json"):
            form = _complete(form, action, stored.config)
            return _editor_page(request, form, key=key, comment=comment)
        compiled = check_form(form, action)
        if compiled is None:
            form = _complete(form, action, stored.config)
            return _editor_page(request, form, key=key, status_code=422, comment=comment)
        try:
            result = service.propose(
                key, compiled.config, actor=ui_session(request).user.actor, comment=comment
            )
        except DomainError as exc:
            record_error(form, action, exc)
            form = _complete(form, action, stored.config)
            return _editor_page(
                request, form, key=key, status_code=exc.status_hint, comment=comment
            )
        if result.change is not None:
            return _see(f"/ui/changes/{result.change.id}?flash=proposed")
        flash = "updated" if result.experiment.version != before else "unchanged"
        return _see(f"/ui/experiments/{key}?flash={flash}")


class RulePages(Controller):
    """The rule tester (anyone signed in)."""

    path = "/experiments"
    opt = {"permission": Permission.VIEW}

    def _render(
        self,
        request: Request[Any, Any, Any],
        key: str,
        sample: str | None,
        result: RuleTest | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Template:
        view = ExperimentService(request.app.state.platform).get(key)
        compiled = validate_config(config_from_builtins(view.config))
        return _page(
            request,
            "editor_rules.html",
            status_code=status_code,
            view=view,
            compiled=compiled,
            sample=sample if sample is not None else _sample_example(compiled),
            result=result,
            error=error,
        )

    @get("/{key:str}/rules", sync_to_thread=True, include_in_schema=False)
    def rules(self, request: Request[Any, Any, Any], key: FromPath[str]) -> Template:
        """Every offer's rule and segment, and the tester's form."""
        return self._render(request, key, None)

    @post("/{key:str}/rules", sync_to_thread=True, include_in_schema=False)
    def test(self, request: Request[Any, Any, Any], key: FromPath[str], data: FormData) -> Template:
        """Evaluate the rules for a pasted sample context (which is not kept anywhere)."""
        sample = str(data.get("context", ""))
        try:
            parsed = json.loads(sample)
        except ValueError as exc:
            return self._render(
                request, key, sample, error=f"not valid JSON: {exc}", status_code=422
            )
        if not isinstance(parsed, dict):
            return self._render(request, key, sample, error="enter a JSON object", status_code=422)
        view = ExperimentService(request.app.state.platform).get(key)
        compiled = validate_config(config_from_builtins(view.config))
        return self._render(request, key, sample, result=run_rule_test(compiled, parsed))


def editor_router() -> Router:
    """The editor and rule tester behind `ui_guard`, with the UI's error pages."""
    return Router(
        path="/ui",
        route_handlers=[EditorPages, RulePages],
        guards=[ui_guard],
        exception_handlers={
            NotAuthorizedException: _not_signed_in,
            PermissionDeniedException: _forbidden,
            DomainError: _domain_error,
        },
        response_headers=PAGE_HEADERS,
        include_in_schema=False,
    )


__all__ = [
    "FLASH",
    "EditorForm",
    "RuleTest",
    "check_form",
    "editor_router",
    "field_id",
    "form_from_config",
    "form_from_post",
    "run_rule_test",
]
