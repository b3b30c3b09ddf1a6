"""Lessons are data: `lessons/NAME.json` holds the steps (title, question, how to set up the
view, which computed reading to show), opened with `?lesson=NAME&step=N`. A course author
copies lab.json, edits it and opens it without touching code (docs/lessons.md: the schema).

Loading checks every field and says which one is wrong, with the file's name; the page shows
that and keeps serving. A name is letters, digits, "-" and "_" only, and the file must be a
regular file directly inside the lessons folder: "../x", absolute paths, NUL and links out of
the folder are refused before anything is opened. No gradio here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from attn.compute.generation import MAX_NEW_TOKENS
from attn.compute.profiles import PROFILE_KINDS
from attn.errors import AttnError, echo
from attn.views import readings, readings_pair
from attn.views.view import BOS_MODES, HEAD_MODES, MEASURES

LESSONS_DIR = Path(__file__).resolve().parents[2] / "lessons"
LESSON_SCHEMA = "attn-lesson/1"
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
MAX_BYTES = 256 * 1024
MAX_STEPS = 50

# The computed readings a step may show ("What the numbers say"), by name.
READINGS: dict[str, Callable[[readings.Screen], str]] = {
    "depth": readings.depth,  # which tokens lead at each layer; most focused and most spread layers
    "comparison": readings_pair.comparison,  # two prompts: what changed and where
    "ablation": readings_pair.ablation,  # deleting tokens against the attention ranking
    "sentences": readings.sentences,  # attention per sentence
    "alike": readings_pair.alike,  # which layers' head profiles agree on two prompts
    "local_far": readings.local_far,  # nearby (grammar-like) versus far back (meaning-like), with its limits
    "overview": readings.overview_reading,  # a summary for any prompt
}
SETUP_FIELDS = ("prompt", "layer", "head", "measure", "bos", "compare", "continue", "ablate", "profile", "words")


# Embedded (`&embed=1`, attn/web/embed.py), the page keeps a course's column short; a lesson's
# step also needs the views its question names: the per-sentence strip (inside "All layers at
# once") and the profile grid. A plain embed hides the grid too. A <head> script marks <html>
# before anything is drawn, as the embed mode's own does.
LESSON_HEAD = """
<script>
if (new URLSearchParams(window.location.search).has('lesson'))
  document.documentElement.classList.add('attn-lesson');
</script>
"""
LESSON_CSS = """
:root.attn-embed:not(.attn-lesson) #profiles { display: none !important; }
:root.attn-embed.attn-lesson #all-layers { display: revert !important; }
"""


class LessonError(AttnError, ValueError):
    """A lesson that cannot be opened: a bad name, a missing file, or a malformed field."""


@dataclass(frozen=True)
class Setup:
    """How a step sets up the view; None: leave that control as the link or the page has it."""

    prompt: str | None = None
    layer: int | dict[str, int] | None = None  # one layer, or one per model name
    head: str | int | None = None
    measure: str | None = None
    bos: str | None = None
    compare: str | None = None  # prompt B
    continue_tokens: int | None = None  # "continue" in the file
    ablate: bool = False  # run "Check by removing tokens" once the step opens
    profile: str | None = None  # which head profile the grid shows
    words: bool | None = None


@dataclass(frozen=True)
class Step:
    title: str
    question: str
    setup: Setup
    reading: str  # a key of READINGS


@dataclass(frozen=True)
class Lesson:
    name: str
    title: str
    steps: tuple[Step, ...]


def lesson_path(name, folder: Path = LESSONS_DIR) -> Path:
    """The file of lesson `name`, never outside `folder`. Raises LessonError."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise LessonError("Lesson names are letters, digits, '-' and '_' (up to 64 characters); the link's name "
                          "has other characters.")
    folder = Path(folder)
    path = folder / f"{name}.json"
    if path.is_symlink() or not path.resolve().is_relative_to(folder.resolve()):
        raise LessonError(f"Lesson {name!r}: lessons/{name}.json must be a file inside the lessons folder.")
    if not path.is_file():
        raise LessonError(f"No lesson named {name!r} (lessons/{name}.json does not exist).")
    return path


def load_lesson(name, folder: Path = LESSONS_DIR) -> Lesson:
    """Read and check lessons/NAME.json. Raises LessonError naming the file and the field."""
    path = lesson_path(name, folder)
    where = f"lessons/{name}.json"
    if path.stat().st_size > MAX_BYTES:
        raise LessonError(f"{where}: larger than {MAX_BYTES // 1024} KiB.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise LessonError(f"{where}: not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise LessonError(f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}).") from None
    return parse_lesson(data, name, where)


def parse_lesson(data, name: str, where: str) -> Lesson:
    """A lesson from its decoded JSON; `where` names the file in every error."""
    def fail(field: str, problem: str):
        raise LessonError(f"{where}: {field}: {problem}")

    if not isinstance(data, dict):
        fail("the top level", "must be an object with 'title' and 'steps'.")
    unknown = set(data) - {"schema", "title", "description", "steps"}
    if unknown:
        fail(sorted(unknown)[0], "unknown field (allowed: schema, title, description, steps).")
    if data.get("schema", LESSON_SCHEMA) != LESSON_SCHEMA:
        fail("schema", f"must be {LESSON_SCHEMA!r}.")
    title = _text(data.get("title"), "title", fail, 200)
    steps = data.get("steps")
    if not isinstance(steps, list) or not 1 <= len(steps) <= MAX_STEPS:
        fail("steps", f"must be a list of 1 to {MAX_STEPS} steps.")
    return Lesson(name, title, tuple(_step(s, f"steps[{k}]", fail) for k, s in enumerate(steps)))


def _text(value, field: str, fail, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        fail(field, "must be non-empty text.")
    if len(value) > limit:
        fail(field, f"longer than {limit} characters.")
    return value


def _step(data, at: str, fail) -> Step:
    if not isinstance(data, dict):
        fail(at, "must be an object with 'title', 'question', 'setup' and 'reading'.")
    unknown = set(data) - {"title", "question", "setup", "reading"}
    if unknown:
        fail(f"{at}.{sorted(unknown)[0]}", "unknown field (allowed: title, question, setup, reading).")
    reading = data.get("reading")
    if reading not in READINGS:
        fail(f"{at}.reading", f"must be one of {', '.join(READINGS)}, not {echo(reading)}.")
    return Step(_text(data.get("title"), f"{at}.title", fail, 200),
                _text(data.get("question"), f"{at}.question", fail, 2000),
                _setup(data.get("setup", {}), f"{at}.setup", fail), reading)


def _setup(data, at: str, fail) -> Setup:
    if not isinstance(data, dict):
        fail(at, "must be an object.")
    for key in data:
        if key not in SETUP_FIELDS:
            fail(f"{at}.{key}", f"unknown field (allowed: {', '.join(SETUP_FIELDS)}).")
    get = data.get
    for key in ("prompt", "compare"):
        if key in data:
            _text(get(key), f"{at}.{key}", fail, 20_000)
    layer = get("layer")
    if layer is not None and not (_whole(layer) or (isinstance(layer, dict) and layer and all(
            isinstance(k, str) and _whole(v) for k, v in layer.items()))):
        fail(f"{at}.layer", "must be a layer number >= 0, or an object of model name -> layer number.")
    head = get("head")
    if head is not None and head not in HEAD_MODES and not _whole(head):
        fail(f"{at}.head", f"must be {' or '.join(map(repr, HEAD_MODES))} or a head number, not {echo(head)}.")
    for key, allowed in (("measure", MEASURES), ("bos", BOS_MODES), ("profile", PROFILE_KINDS)):
        if get(key) is not None and get(key) not in allowed:
            fail(f"{at}.{key}", f"must be one of {', '.join(allowed)}, not {echo(get(key))}.")
    n = get("continue")
    if n is not None and not (_whole(n) and 1 <= n <= MAX_NEW_TOKENS):
        fail(f"{at}.continue", f"must be a number of tokens from 1 to {MAX_NEW_TOKENS}.")
    for key in ("ablate", "words"):
        if get(key) is not None and not isinstance(get(key), bool):
            fail(f"{at}.{key}", "must be true or false.")
    if get("compare") and n not in (None, 1):
        fail(f"{at}.compare", "a step compares two prompts or continues one, not both.")
    return Setup(prompt=get("prompt"), layer=layer, head=head, measure=get("measure"), bos=get("bos"),
                 compare=get("compare"), continue_tokens=n, ablate=bool(get("ablate", False)),
                 profile=get("profile"), words=get("words"))


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def step_query(setup: Setup, model: str) -> dict[str, str]:
    """The deep-link query (attn/web/link.py) that sets up a step's view for `model`."""
    query = {"model": model}
    if setup.prompt is not None:
        query["prompt"] = setup.prompt
    layer = setup.layer.get(model) if isinstance(setup.layer, Mapping) else setup.layer
    if layer is not None:
        query["layer"] = str(layer)
    for key, value in (("head", setup.head), ("measure", setup.measure), ("bos", setup.bos),
                       ("compare", setup.compare), ("continue", setup.continue_tokens)):
        if value is not None:
            query[key] = str(value)
    if setup.words:
        query["words"] = "1"
    return query
