"""The Space's configuration obeys Hugging Face's rules, so the build cannot fail on them.

Facts read on 2026-11-29 from the Spaces documentation and the `spaces` package (0.51.3):
ZeroGPU runs only the Python and torch versions below (an unsupported python_version
silently becomes 3.10); gradio comes from `sdk_version` and spaces is platform-managed, so
neither may be pinned in requirements.txt; `short_description` is refused above 60
characters; `suggested_hardware: zero-a10g` points duplicators at ZeroGPU.
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]
ZEROGPU_PYTHON = {"3.10.13", "3.12.12"}
ZEROGPU_TORCH = {"2.8.0", "2.9.1", "2.10.0", "2.11.0", "2.12.1", "2.13.0"}
PLATFORM_PACKAGES = {"gradio", "spaces"}
SHORT_DESCRIPTION_MAX = 60


def front_matter() -> dict:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.match(r"---\n(.*?)\n---\n", text, re.S)
    assert match, "README.md must start with the Space's YAML front matter"
    return yaml.safe_load(match.group(1))


def requirements(name: str) -> list[Requirement]:
    """The requirement lines of one file (not following -r includes)."""
    lines = (ROOT / name).read_text(encoding="utf-8").splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines
            if line.split("#")[0].strip() and not line.startswith("-")]


def pinned_version(req: Requirement) -> str:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{req} must be pinned with =="
    return specs[0].version


def test_the_python_version_is_one_zerogpu_runs():
    assert str(front_matter()["python_version"]) in ZEROGPU_PYTHON


@pytest.mark.parametrize("req", requirements("requirements.txt"), ids=str)
def test_every_requirement_installs_on_the_spaces_python(req):
    """transformers 5 needs Python >= 3.11: on ZeroGPU's 3.10 its install would fail."""
    python = str(front_matter()["python_version"])
    requires = importlib.metadata.metadata(req.name).get("Requires-Python") or ""
    assert python in SpecifierSet(requires), f"{req.name} requires Python {requires}, the Space runs {python}"


def test_torch_is_pinned_to_a_version_zerogpu_supports():
    torch = [r for r in requirements("requirements.txt") if r.name == "torch"]
    assert len(torch) == 1
    assert pinned_version(torch[0]) in ZEROGPU_TORCH


def test_the_platform_packages_are_not_pinned_for_the_space():
    names = {r.name.lower() for r in requirements("requirements.txt")}
    assert not names & PLATFORM_PACKAGES


def test_the_local_install_has_the_platform_packages_at_the_spaces_versions():
    """`pip install -r requirements-local.txt` runs the demo off Spaces with the same gradio."""
    local = {r.name.lower(): r for r in requirements("requirements-local.txt")}
    assert PLATFORM_PACKAGES <= set(local)
    assert pinned_version(local["gradio"]) == str(front_matter()["sdk_version"])
    assert "-r requirements.txt" in (ROOT / "requirements-local.txt").read_text(encoding="utf-8")


def test_the_front_matter_describes_a_zerogpu_gradio_space():
    meta = front_matter()
    assert meta["sdk"] == "gradio"
    assert (ROOT / meta["app_file"]).is_file()
    assert meta["suggested_hardware"] == "zero-a10g"
    assert len(meta["short_description"]) <= SHORT_DESCRIPTION_MAX


def test_the_front_matter_names_the_gated_model_the_space_loads():
    from attn.model.registry import REGISTRY

    hub_ids = {spec.hf_id for spec in REGISTRY.values() if spec.hf_id}
    assert hub_ids <= set(front_matter()["models"])


# ---- the hosting facts a course author needs (issue 19) ----------------------------------------
# From the Hugging Face Hub documentation (the Spaces overview and the ZeroGPU page), August 2026,
# as docs/deploy.md gives them: Gradio Spaces on CPU hardware need a paid plan; a free personal
# account in good standing (verified email, older than 30 days) hosts up to 2 ZeroGPU Spaces;
# ZeroGPU's default size is half an NVIDIA RTX Pro 6000 Blackwell (48 GB, `large`), and `xlarge`
# costs twice the quota; daily GPU quotas: anonymous 2 min, free 5 min, PRO/Team 40 min,
# Enterprise 60 min. Every visitor of an embedded Space counts as anonymous, per IP address.
HOSTING_FACTS_READ = "August 2026"
DAILY_QUOTA_S = {"anonymous": 120, "free": 300, "PRO/Team": 2400, "Enterprise": 3600}
FREE_ZEROGPU_SPACES = 2
DEFAULT_SIZE, DEFAULT_SIZE_GB = "large", 48
NEW_PROMPTS_PER_ANONYMOUS_DAY = 10  # what a student in an embed can count on


def test_a_free_course_author_s_space_is_a_zerogpu_one():
    """CPU hardware needs a paid plan for a Gradio Space: the Space points duplicators at ZeroGPU."""
    assert str(front_matter()["suggested_hardware"]).startswith("zero-")


def test_an_anonymous_student_can_ask_about_ten_new_prompts_a_day():
    """ZeroGPU schedules a call only while the quota left covers the duration it asks for: here
    what a new prompt of the artist passage's length asks for (attn/compute/duration.py)."""
    from attn.compute.duration import gpu_seconds
    from attn.compute.jobs import Work

    asked = gpu_seconds(Work("forward", 37))
    assert asked * NEW_PROMPTS_PER_ANONYMOUS_DAY <= DAILY_QUOTA_S["anonymous"]


@pytest.mark.app  # imports spaces
def test_gpu_calls_ask_for_the_default_size_not_the_double_priced_one(monkeypatch):
    import attn.web.gpu
    from attn.settings import Settings

    asked = {}

    def gpu(*args, **kwargs):  # spaces.GPU as a decorator, with or without its function
        asked.update(kwargs)
        return args[0] if args and callable(args[0]) else (lambda fn: fn)

    monkeypatch.setattr(attn.web.gpu.spaces, "GPU", gpu)
    attn.web.gpu.accelerator(Settings())(lambda *args: None)
    assert "duration" in asked and asked.get("size", DEFAULT_SIZE) == DEFAULT_SIZE


def test_the_deploy_guide_gives_the_dated_hosting_facts_and_no_free_cpu_path():
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    facts = [HOSTING_FACTS_READ, "Hugging Face Hub documentation", f"up to **{FREE_ZEROGPU_SPACES} ZeroGPU Spaces**",
             "RTX Pro 6000 Blackwell", f"{DEFAULT_SIZE_GB} GB", f"`{DEFAULT_SIZE}`", "`xlarge`",
             *(f"{name} | {seconds // 60} min" for name, seconds in DAILY_QUOTA_S.items())]
    missing = [fact for fact in facts if fact not in guide]
    assert not missing, missing
    for text in (guide, (ROOT / "README.md").read_text(encoding="utf-8")):
        assert "CPU basic** (free)" not in text and "free CPU Space" not in text
