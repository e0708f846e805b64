"""service/ never imports torch or training/ (ONNX and the manifest are the boundary), and the
core modules never import the web framework (errors become HTTP only at the edge)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SERVICE = REPO / "service"
FORBIDDEN = ("torch", "training")
CORE = ("bundle", "catalog", "encoder", "errors", "explain", "index", "ranking", "recommender",
        "registry", "settings", "user_sequences")  # fmt: skip


def service_modules() -> list[str]:
    return sorted(f"service.{p.stem}" for p in SERVICE.glob("*.py") if p.stem != "__init__")


def imported_after(modules: list[str]) -> set[str]:
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, timeout=120)  # fmt: skip
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_importing_every_service_module_loads_no_torch_or_training() -> None:
    loaded = imported_after(service_modules())
    assert "service.main" in loaded
    bad = sorted(m for m in loaded if m.split(".")[0] in FORBIDDEN)
    assert bad == []


def test_core_modules_do_not_load_the_web_framework() -> None:
    loaded = imported_after([f"service.{name}" for name in CORE])
    assert not {"fastapi", "starlette"} & {m.split(".")[0] for m in loaded}


def test_no_service_source_file_imports_torch_or_training() -> None:
    offenders = []
    for path in sorted(SERVICE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
                names = [a.value for a in node.args if isinstance(a, ast.Constant)]  # type: ignore[misc]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(SERVICE.glob("*.py"))) > 10  # the scan saw the package
