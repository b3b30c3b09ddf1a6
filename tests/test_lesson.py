"""Lessons are data (attn/web/lesson.py, docs/lessons.md): lessons/NAME.json is read and
checked field by field; a malformed file gets an error naming the file and the field; a
lesson name can never reach a file outside lessons/. No gradio, no model."""

from __future__ import annotations

import json
import os

import pytest

from attn.web.lesson import (
    LESSONS_DIR,
    READINGS,
    LessonError,
    Setup,
    lesson_path,
    load_lesson,
    step_query,
)

GOOD_STEP = {"title": "One", "question": "What?", "setup": {"prompt": "Jide was hungry"}, "reading": "depth"}


def write(folder, name: str, data) -> None:
    text = data if isinstance(data, str) else json.dumps(data)
    (folder / f"{name}.json").write_text(text, encoding="utf-8")


def lesson_with(**step) -> dict:
    return {"title": "T", "steps": [GOOD_STEP | step]}


def refused(folder, data, *expected: str) -> str:
    write(folder, "bad", data)
    with pytest.raises(LessonError) as info:
        load_lesson("bad", folder)
    message = str(info.value)
    assert message.startswith("lessons/bad.json: "), message
    for part in expected:
        assert part in message, message
    return message


# ---- the lab's lesson --------------------------------------------------------------------------


def test_the_lab_has_seven_steps_each_with_a_question_and_a_computed_reading():
    lesson = load_lesson("lab")
    assert len(lesson.steps) == 7
    assert all(step.reading in READINGS and step.question.strip() for step in lesson.steps)
    assert [s.reading for s in lesson.steps] == ["depth", "comparison", "ablation", "sentences", "alike",
                                                 "local_far", "overview"]


def test_the_lab_sets_up_the_comparison_and_the_ablation_where_the_lab_asks_for_them():
    steps = load_lesson("lab").steps
    assert steps[1].setup.compare and steps[4].setup.compare
    assert steps[2].setup.ablate
    assert all(s.setup.prompt for s in steps)  # every step opens on a figure


def test_a_step_becomes_a_deep_link_query_for_the_model():
    setup = Setup(prompt="P", layer={"gemma-3-270m": 12, "gemma-3-1b": 19}, head=2, measure="value", compare="B")
    assert step_query(setup, "gemma-3-1b") == {"model": "gemma-3-1b", "prompt": "P", "layer": "19", "head": "2",
                                               "measure": "value", "compare": "B"}
    assert "layer" not in step_query(Setup(layer={"other": 3}), "gemma-3-270m")  # the page's suggestion then


# ---- malformed files: the file and the field are named ----------------------------------------------


def test_not_json(tmp_path):
    refused(tmp_path, '{"title": "T", "steps": [', "not valid JSON", "line 1")


def test_not_utf8(tmp_path):
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(LessonError, match="lessons/bad.json: not UTF-8"):
        load_lesson("bad", tmp_path)


@pytest.mark.parametrize(("data", "field"), [
    ([], "the top level"),
    ({"steps": [GOOD_STEP]}, "title"),
    ({"title": "T", "steps": []}, "steps"),
    ({"title": "T", "steps": "one"}, "steps"),
    ({"title": "T", "steps": [GOOD_STEP], "extra": 1}, "extra"),
    ({"title": "T", "schema": "attn-lesson/9", "steps": [GOOD_STEP]}, "schema"),
    ({"title": "T", "steps": [GOOD_STEP, "two"]}, "steps[1]"),
])
def test_malformed_lesson(tmp_path, data, field):
    refused(tmp_path, data, f": {field}: ")


@pytest.mark.parametrize(("step", "field"), [
    ({"title": ""}, "steps[0].title"),
    ({"question": None}, "steps[0].question"),
    ({"reading": "canned"}, "steps[0].reading"),
    ({"colour": "red"}, "steps[0].colour"),
    ({"setup": []}, "steps[0].setup"),
    ({"setup": {"promt": "typo"}}, "steps[0].setup.promt"),
    ({"setup": {"prompt": ""}}, "steps[0].setup.prompt"),
    ({"setup": {"layer": -1}}, "steps[0].setup.layer"),
    ({"setup": {"layer": "12"}}, "steps[0].setup.layer"),
    ({"setup": {"layer": {"gemma-3-270m": 1.5}}}, "steps[0].setup.layer"),
    ({"setup": {"head": "median"}}, "steps[0].setup.head"),
    ({"setup": {"measure": "gradient"}}, "steps[0].setup.measure"),
    ({"setup": {"bos": "drop"}}, "steps[0].setup.bos"),
    ({"setup": {"profile": "kurtosis"}}, "steps[0].setup.profile"),
    ({"setup": {"continue": 99}}, "steps[0].setup.continue"),
    ({"setup": {"ablate": "yes"}}, "steps[0].setup.ablate"),
    ({"setup": {"compare": "B", "continue": 4}}, "steps[0].setup.compare"),
])
def test_malformed_step(tmp_path, step, field):
    refused(tmp_path, lesson_with(**step), f": {field}: ")


def test_an_unknown_reading_lists_the_known_ones(tmp_path):
    message = refused(tmp_path, lesson_with(reading="made-up"), "steps[0].reading")
    assert all(name in message for name in READINGS)


def test_a_huge_file_is_refused_unread(tmp_path):
    write(tmp_path, "bad", " " * (300 * 1024))
    with pytest.raises(LessonError, match="larger than"):
        load_lesson("bad", tmp_path)


# ---- hostile names: nothing outside lessons/ is ever opened ----------------------------------------


@pytest.mark.parametrize("name", ["../x", "..", "../lessons/lab", "/etc/passwd", "a\x00b", "lab\x00", "lab.json",
                                  "lab/../lab", "", " lab", "%2e%2e", "C:\\x", "x" * 65, "-lab", None, 3, ["lab"]])
def test_hostile_names_are_refused_before_any_file_is_touched(tmp_path, monkeypatch, name):
    def no_file_access(*args, **kwargs):
        raise AssertionError("a file was touched for a refused name")

    monkeypatch.setattr("pathlib.Path.is_file", no_file_access)
    monkeypatch.setattr("pathlib.Path.resolve", no_file_access)
    with pytest.raises(LessonError, match="letters, digits"):
        lesson_path(name, tmp_path)


def test_a_link_out_of_the_lessons_folder_is_refused(tmp_path):
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps(lesson_with()), encoding="utf-8")
    folder = tmp_path / "lessons"
    folder.mkdir()
    os.symlink(outside, folder / "sneaky.json")
    with pytest.raises(LessonError, match="inside the lessons folder"):
        load_lesson("sneaky", folder)


def test_a_missing_lesson_says_so(tmp_path):
    with pytest.raises(LessonError, match=r"No lesson named 'nope' \(lessons/nope.json does not exist\)"):
        load_lesson("nope", tmp_path)


def test_a_folder_named_like_a_lesson_is_not_read(tmp_path):
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(LessonError, match="does not exist"):
        load_lesson("dir", tmp_path)


def test_a_copied_and_edited_lesson_opens_by_its_own_name(tmp_path):
    data = json.loads((LESSONS_DIR / "lab.json").read_text(encoding="utf-8"))
    data["title"] = "My course"
    data["steps"] = data["steps"][3:5]
    write(tmp_path, "my-course_2", data)
    lesson = load_lesson("my-course_2", tmp_path)
    assert lesson.title == "My course" and [s.reading for s in lesson.steps] == ["sentences", "alike"]
