"""The direction of imports, read from the source with `ast` (nothing is imported).

`domain` (pure types) <- `features`, `policies`, `evaluation` (pure computation) <- `storage`
<- `service` <- `api`, `cli`. Only `api/` imports Litestar, and only the VW adapter imports
`vowpal_wabbit_next`.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bandit_platform"
VW_ADAPTER = "bandit_platform.policies.vw_adapter"
PURE_LAYERS = ("domain", "features", "policies", "evaluation")
PERSISTENCE = ("litestar", "sqlmodel", "sqlalchemy")
#: Higher layers a pure layer may not reach into.
HIGHER_LAYERS = ("storage", "service", "api", "cli", "settings")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


@cache
def imports_by_module() -> dict[str, frozenset[str]]:
    """Every module of the package, with the absolute names of the modules it imports."""
    result: dict[str, frozenset[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        is_package = path.name == "__init__.py"
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    base = node.module or ""
                else:
                    # relative import: drop one package level per dot beyond the first
                    package = module.split(".") if is_package else module.split(".")[:-1]
                    anchor = package[: len(package) - (node.level - 1)]
                    base = ".".join([*anchor, *([node.module] if node.module else [])])
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute | ast.Name)
                and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id)
                in ("import_module", "__import__")
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                names.add(node.args[0].value)
        result[module] = frozenset(names)
    return result


def _top(name: str) -> str:
    return name.split(".", 1)[0]


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_the_walker_sees_the_package() -> None:
    modules = imports_by_module()
    assert VW_ADAPTER in modules
    assert "bandit_platform.domain.config" in modules
    assert "msgspec" in modules["bandit_platform.domain.config"]
    assert any(_top(name) == "litestar" for name in modules["bandit_platform.api.app"])


def test_only_the_adapter_imports_vowpal_wabbit() -> None:
    importers = {
        module
        for module, names in imports_by_module().items()
        if any(_top(name) == "vowpal_wabbit_next" for name in names)
    }
    assert importers == {VW_ADAPTER}


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_web_framework_or_database(layer: str) -> None:
    offenders = {
        module: sorted(name for name in names if _top(name) in PERSISTENCE)
        for module, names in imports_by_module().items()
        if _layer(module) == layer
    }
    assert offenders, f"no modules found under bandit_platform/{layer}"
    assert {module: names for module, names in offenders.items() if names} == {}


@pytest.mark.parametrize("layer", PURE_LAYERS)
def test_pure_layers_import_no_higher_layer(layer: str) -> None:
    higher = tuple(f"bandit_platform.{name}" for name in HIGHER_LAYERS)
    offenders = {
        module: sorted(
            name for name in names if any(name == h or name.startswith(f"{h}.") for h in higher)
        )
        for module, names in imports_by_module().items()
        if _layer(module) == layer
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_domain_imports_no_computation_layer() -> None:
    lower_than_domain = ("features", "policies", "evaluation")
    offenders = {
        module: sorted(
            name
            for name in names
            if any(name.startswith(f"bandit_platform.{layer}") for layer in lower_than_domain)
        )
        for module, names in imports_by_module().items()
        if _layer(module) == "domain"
    }
    assert {module: names for module, names in offenders.items() if names} == {}


def test_only_the_api_imports_litestar() -> None:
    importers = {
        module
        for module, names in imports_by_module().items()
        if any(_top(name) == "litestar" for name in names)
    }
    assert importers
    assert {module for module in importers if _layer(module) != "api"} == set()
