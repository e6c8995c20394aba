"""The shipped package leaves out the local stand-ins (localservices/), and production code never
imports them: the controller reaches Rucio and PanDA through its Connections, as at a real site."""

from __future__ import annotations

import ast
import tomllib

from drp_campaign.settings import PROJECT_ROOT

PRODUCTION = ("drp_campaign", "operators", "sensors", "hooks", "triggers", "plugins", "dags")


def _imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_production_code_never_imports_the_local_stand_ins():
    offenders = []
    for folder in PRODUCTION:
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            modules = _imported_modules(ast.parse(path.read_text(), str(path)))
            offenders += [
                f"{path.relative_to(PROJECT_ROOT)}: {m}"
                for m in modules
                if m.split(".")[0] == "localservices" or m.endswith(("rucio_local", "panda_local"))
            ]
    assert not offenders


def test_the_wheel_leaves_out_localservices():
    setuptools = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = [*setuptools["packages"], *setuptools.get("package-dir", {}).values()]
    assert not [p for p in shipped if "localservices" in p or p.endswith(("_local",))]
    assert not (PROJECT_ROOT / "drp_campaign" / "rucio_local").exists()
    assert not (PROJECT_ROOT / "drp_campaign" / "panda_local").exists()
