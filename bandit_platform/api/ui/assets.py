"""Where the UI's templates and static files are, in a checkout and when installed."""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[2]


@cache
def web_directory() -> Path:
    """The `web/` folder: inside the installed package (the wheel puts it there), else the
    checkout's top-level one.

    Raises:
        FileNotFoundError: neither exists.
    """
    for candidate in (_PACKAGE / "web", _PACKAGE.parent / "web"):
        if (candidate / "templates").is_dir():
            return candidate
    raise FileNotFoundError(f"no web/templates beside or inside {_PACKAGE}")


@cache
def plotly_js() -> Path:
    """plotly.js as the installed plotly package ships it (served locally: no CDN).

    Found without importing plotly (its import is slow and pulls in more than a file path).

    Raises:
        FileNotFoundError: plotly is not installed or ships no bundle.
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the plotly package is not installed")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise FileNotFoundError(f"plotly ships no {path}")
    return path
