"""Imports run one way: the engine never imports the UI, and the HTML views never pay for
matplotlib (only the line diagram draws with it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize("module", ["attn.highlight", "attn.heatmap", "attn.summary", "attn.labels", "attn.view",
                                    "attn.cli"])
def test_the_html_views_and_the_cli_do_not_import_matplotlib(module):
    assert "matplotlib" not in imported_after(f"import {module}")


def test_the_engine_never_imports_the_ui():
    loaded = imported_after("import attn, attn.engine, attn.view_cache, attn.summary, attn.link")
    assert "gradio" not in loaded and "app" not in loaded and "spaces" not in loaded
