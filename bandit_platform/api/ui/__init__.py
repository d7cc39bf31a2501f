"""The web UI for product managers and compliance reviewers: server-rendered pages under
`/ui`, Jinja templates and static files from `web/`, plotly.js served from the plotly package.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from bandit_platform.api.ui.approvals import approvals_router
from bandit_platform.api.ui.assets import web_directory
from bandit_platform.api.ui.editor import FLASH, editor_router
from bandit_platform.api.ui.pages import plotly_bundle, ui_router
from bandit_platform.api.ui.simulation import simulation_router

#: How a missing number is shown (an en dash).
MISSING = "\N{EN DASH}"


def _number(value: Any, digits: int = 3) -> str:
    """A number for display; a missing or non-finite one as an en dash."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:,.{digits}f}"


def _percent(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return MISSING
    return f"{100 * value:.{digits}f}%"


def _when(value: datetime | None) -> str:
    return MISSING if value is None else value.strftime("%Y-%m-%d %H:%M UTC")


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja over `web/templates`, autoescaping HTML, failing on undefined names."""
    environment = Environment(
        loader=FileSystemLoader(web_directory() / "templates"),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(number=_number, percent=_percent, when=_when)
    # The confirmations pages show after a redirect (`?flash=created`).
    environment.globals["flash_messages"] = FLASH
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


def ui_route_handlers() -> list[Any]:
    """The pages, the static files (public: they hold no data) and the plotly bundle."""
    static = create_static_files_router(
        path="/ui/static",
        directories=[web_directory() / "static"],
        include_in_schema=False,
        cache_control=None,
    )
    return [
        ui_router(),
        approvals_router(),
        simulation_router(),
        editor_router(),
        static,
        plotly_bundle,
    ]


__all__ = ["template_config", "ui_route_handlers"]
