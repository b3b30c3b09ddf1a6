"""Imports run one way: only the web page (attn/web/) and the entry point (app.py) import
gradio or spaces, the engine never imports the UI, and the HTML views never pay for
matplotlib (only the line diagram draws with it); no module but attn/settings.py reads the
environment; `import app` starts nothing. The tests may import bench/ (tests/app_server.py
builds on bench/launch.py), but bench/ never imports the tests, and no test edits sys.path
(pyproject.toml's pythonpath puts the repository root on it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEST_MODULES = {p.stem for p in (ROOT / "tests").glob("*.py")} | {"tests"}
UI_PACKAGES = {"gradio", "spaces"}
# Every .py of the product: outside tests/ and bench/ (and hidden or virtual-env folders).
PRODUCT = sorted(p for p in ROOT.rglob("*.py")
                 if not {"tests", "bench"} & set(p.relative_to(ROOT).parts)
                 and not any(part.startswith(".") or part in ("venv", "site-packages")
                             for part in p.relative_to(ROOT).parts))


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


def relative(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


HTML_VIEWS = ["attn.views.highlight", "attn.views.heatmap", "attn.views.summary", "attn.views.labels",
              "attn.views.view", "attn.views.compare_difference", "attn.views.ablation_bars", "attn.views.words"]


@pytest.mark.parametrize("module", HTML_VIEWS + ["attn.cli"])
def test_the_html_views_and_the_cli_do_not_import_matplotlib(module):
    assert "matplotlib" not in imported_after(f"import {module}")


def test_the_engine_never_imports_the_ui():
    loaded = imported_after("import attn, attn.compute.engine, attn.views.view_cache, attn.views.summary, "
                            "attn.web.link")
    assert "gradio" not in loaded and "app" not in loaded and "spaces" not in loaded


def test_importing_the_entry_point_imports_no_ui_and_starts_nothing():
    """app.py's main starts the bundled model's conversion before gradio's import: so
    gradio is imported inside its functions, and importing it builds nothing."""
    code = ("import sys, threading, psutil; before = threading.active_count(); import app; "
            "print(sorted(m for m in ('gradio', 'spaces') if m in sys.modules), threading.active_count() - before, "
            "len(psutil.Process().children()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[] 0 0"  # no UI, no thread, no process


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_only_the_web_page_and_the_entry_point_import_gradio_or_spaces(path):
    if relative(path) == "app.py" or relative(path).startswith("attn/web/"):
        return
    assert not imported(path) & UI_PACKAGES, relative(path)


def reads_environment(path: Path) -> list[int]:
    """Lines that touch the process environment: os.environ, os.getenv, os.putenv, os.unsetenv
    (as attributes of os, or imported from it)."""
    names = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in names and isinstance(node.value, ast.Name):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and {a.name for a in node.names} & names:
            lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("path", PRODUCT, ids=relative)
def test_no_module_but_the_settings_reads_the_environment(path):
    if relative(path) == "attn/settings.py":
        assert reads_environment(path)  # the one place: Settings.from_env
        return
    assert reads_environment(path) == [], relative(path)


@pytest.mark.parametrize("path", sorted((ROOT / "bench").glob("*.py")), ids=lambda p: f"bench/{p.name}")
def test_bench_never_imports_the_tests(path):
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
