"""What the page shows: the Subject a visitor asked about, and the result held for it.

The result lives in the visitor's own session (a gr.State keeps a reference, not a copy),
so the views drawn after an analysis, and every control moved later, never depend on the
engine's shared cache still holding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from attn.views import words
from attn.views.view import View
from attn.web.link import share_query

if TYPE_CHECKING:
    from attn.compute.analysis import Analysis
    from attn.compute.compare import Comparison
    from attn.compute.generation import Continuation, Generation


@dataclass(frozen=True)
class Subject:
    """What was analysed: one prompt, two compared, or one continued."""

    model: str
    prompt: str
    compare: str = ""  # prompt B; "" when nothing is compared
    continuation: Continuation | None = None  # how the prompt was continued; None: one prediction

    def share(self, view: View, step, by_words: bool) -> str:
        """The link query that opens this view of this subject."""
        return share_query(self.prompt, self.model, view, compare=self.compare, continuation=self.continuation,
                           step=int(step or 0), words=bool(by_words))


@dataclass(frozen=True, eq=False)  # eq=False: compared by identity, never by its arrays
class Shown:
    """A subject and its result, as the views draw them. Exactly one result is set."""

    subject: Subject
    analysis: Analysis | None = None  # one prompt's analysis
    comparison: Comparison | None = None  # two prompts'
    generation: Generation | None = None  # a continuation's

    def __deepcopy__(self, memo) -> "Shown":
        """Itself: it is frozen and its arrays are never written, so the page's first sight
        (a gr.State's initial value, which Gradio deep-copies per session) is shared, not copied."""
        return self

    def drawn(self, step, by_words: bool) -> Analysis:
        """The analysis the views draw: prompt A's in a comparison, the step's in a
        continuation, summed per word with `by_words`. Raises AttnError (a step out of range)."""
        if self.comparison is not None:
            analysis = self.comparison.a
        elif self.generation is not None:
            analysis = self.generation.step_analysis(min(int(step or 0), self.generation.num_steps - 1))
        else:
            analysis = self.analysis
        return words.merged(analysis) if by_words else analysis
