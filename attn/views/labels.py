"""Text for labels: tokens made readable, head modes named. No plotting library here, so
the HTML views and the CLI can use these without importing matplotlib."""

from __future__ import annotations

MAX_LABEL_CHARS = 12


def visible(text: str, limit: int = MAX_LABEL_CHARS) -> str:
    """A token as a label: whitespace and control characters made visible, long ones cut."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("⏎")
        elif ch == "\t":
            out.append("⇥")
        elif ch == "\r":
            out.append("␍")
        elif ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0:
            out.append(f"\\x{ord(ch):02x}")
        elif ch in "\u200b\u200c\u200d\u2060\ufeff":
            out.append("·")
        else:
            out.append(ch)
    s = "".join(out)
    if s.strip() == "":
        s = "␣" * max(1, min(len(s), 3))
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    return s


def head_label(head: str | int) -> str:
    """'mean over heads', 'max over heads' or 'head 2'."""
    return {"mean": "mean over heads", "max": "max over heads"}.get(head, f"head {head}")


def measure_label(measure: str) -> str:
    """What a view draws, as its titles and legends name it."""
    return {"raw": "attention weights", "value": "value-weighted attention",
            "rollout": "attention rollout"}.get(measure, measure)
