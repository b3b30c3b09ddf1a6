"""What every phase of the benchmark shares: targets, timing and memory helpers, the report."""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = "gemma-3-270m"
MEAN, MAX = "Mean over heads", "Max over heads"
SECRET_ENV = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
APP_ENV_DROP = SECRET_ENV + ("ATTN_MODELS", "ATTN_DEFAULT_MODEL", "SPACES_ZERO_GPU", "GRADIO_ROOT_PATH")

# Targets.
START_FIRST_ANSWER_S = 5.0
PRESET_AFTER_PAGE_S = 1.0  # second launch: a preset's /analyze after the page answers (issue 21)
TYPED_AFTER_PAGE_S = 1.5  # second launch: a prompt typed before the restart, after the page answers
FIRST_LAUNCH_ANSWER_S = 30.0
ANALYSIS_RATIO = 1.5
SWITCH_SHARE = 0.05
SWITCH_MS = 100.0
LONG_RATIO = 3.0
GENERATE_RATIO = 1.5  # generation with every step's attention vs model.generate alone
COMPARE_RATIO = 2.2  # two analyses + cross probabilities vs one bare forward of the longer prompt


def now() -> float:
    return time.perf_counter()


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt_s(x) -> str:
    if x is None:
        return "n/a"
    return f"{x:.2f} s" if x >= 1 else f"{x * 1000:.1f} ms"


def fmt_mb(b) -> str:
    return "n/a" if b is None else (f"{b / 2**20:,.1f} MiB" if b >= 2**20 else f"{b / 1024:,.1f} KiB")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


LOADAVG: dict[str, float] = {}


def phase_mark(name: str) -> None:
    """Log a phase and note the 1-minute load average (how noisy the machine was)."""
    LOADAVG[name] = round(os.getloadavg()[0], 2)
    log(f"{name} (load average {LOADAVG[name]})")


def maxrss_bytes() -> int:
    """ru_maxrss in bytes. Beware: on Linux a child's ru_maxrss starts at its parent's
    high-water mark (it survives fork and exec), so it is useless for a small child of a
    big parent; peak_rss() is the per-process figure."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def peak_rss() -> int:
    """This process's own peak resident set (VmHWM: reset by exec), in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return maxrss_bytes()


def current_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def quiet_env(env: dict) -> dict:
    env = dict(env)
    for name in SECRET_ENV:
        env.pop(name, None)
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    return env


class Report:
    """Result rows for the table, plus every raw sample."""

    def __init__(self):
        self.rows: list[dict] = []
        self.raw: dict[str, object] = {}
        self.errors: list[str] = []

    def row(self, section, target, measured, verdict, status):
        self.rows.append(dict(section=section, target=target, measured=measured, verdict=verdict, status=status))

    def check(self, section, target, measured, verdict, ok: bool | None):
        self.row(section, target, measured, verdict, "INFO" if ok is None else ("PASS" if ok else "FAIL"))

    def error(self, section, exc: BaseException):
        self.errors.append(f"{section}: {''.join(traceback.format_exception(exc))}")
        self.row(section, "(phase failed)", f"{type(exc).__name__}: {str(exc)[:200]}", "see errors", "ERROR")
