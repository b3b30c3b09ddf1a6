"""Imports run one way: the engine never imports the UI, and the HTML views never pay for
matplotlib (only the line diagram draws with it); the tests and the benchmark both use
app_server/ and attn/, the tests may import bench/, but neither bench/ nor app_server/
imports the tests, and no test edits sys.path (pyproject.toml's pythonpath puts the
repository root on it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULES = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize("module", ["attn.views.highlight", "attn.views.heatmap", "attn.views.summary", "attn.views.labels", "attn.views.view",
                                    "attn.cli"])
def test_the_html_views_and_the_cli_do_not_import_matplotlib(module):
    assert "matplotlib" not in imported_after(f"import {module}")


def test_the_engine_never_imports_the_ui():
    loaded = imported_after("import attn, attn.compute.engine, attn.views.view_cache, attn.views.summary, attn.web.link")
    assert "gradio" not in loaded and "app" not in loaded and "spaces" not in loaded


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")) + sorted((ROOT / "app_server").glob("*.py")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_bench_and_the_launcher_never_import_the_tests(path):
    assert not imported(path) & TEST_MODULES, path


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("*.py")), ids=lambda p: p.name)
def test_no_test_edits_sys_path(path):
    def is_sys_path(node) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr == "path"
                and isinstance(node.value, ast.Name) and node.value.id == "sys")

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        edits = (isinstance(node, ast.Attribute) and is_sys_path(node.value)  # sys.path.insert(...)
                 or isinstance(node, ast.Subscript) and is_sys_path(node.value)  # sys.path[0] = ...
                 or isinstance(node, ast.Assign) and any(is_sys_path(t) for t in node.targets))
        assert not edits, f"{path.name}:{node.lineno} edits sys.path"
