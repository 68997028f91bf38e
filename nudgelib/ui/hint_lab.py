"""The hint lab (notebook 05): type a hint for a problem the model never solves and see what it
would do: the leak check's verdict, pass@G with and without it, and the advantages NuRL's group
would get. The computation is handed in (``run(hint) -> dict``, e.g.
:func:`nudgelib.evaluate.try_hint`); this module only draws it, so it knows nothing of the
method."""

from __future__ import annotations

import html
from collections.abc import Callable


def render(res: dict) -> str:
    """The result of one try as HTML (also what a saved notebook keeps)."""
    esc = html.escape
    g = res["G"]
    leak = ("<b style='color:#b00'>leaks the answer</b>: NuRL's hint bank would refuse it"
            if res["leaks"] else "<b style='color:#070'>passes</b> (no answer found in it)")
    rows = [f"<tr><td>leak check</td><td>{leak}</td></tr>",
            f"<tr><td>without the hint</td><td>{res['plain_correct']} / {g} correct "
            f"(pass@1 {res['plain_pass@1']:.2f}, pass@{g} {res['plain_pass@G']:.0f})</td></tr>",
            f"<tr><td>with the hint</td><td>{res['hinted_correct']} / {g} correct "
            f"(pass@1 {res['hinted_pass@1']:.2f}, pass@{g} {res['hinted_pass@G']:.0f})</td></tr>"]
    if res.get("nurl_advantages") is not None:
        cells = "".join(f"<td>{'hint-free' if i == 0 else 'hinted'}<br>r = {r:.0f}<br>"
                        f"A = {a:+.2f}</td>"
                        for i, (r, a) in enumerate(zip(res["nurl_rewards"],
                                                       res["nurl_advantages"])))
        verdict = ("a learnable group: the hinted successes give it a gradient"
                   if any(r > 0 for r in res["nurl_rewards"]) else
                   "still 0/G: every advantage is 0, the hint did not help")
        rows.append(f"<tr><td>NuRL's group ({verdict})</td><td><table><tr>{cells}</tr></table>"
                    f"</td></tr>")
    else:
        rows.append("<tr><td>NuRL</td><td>does not fire: the hint-free group already has a "
                    "success</td></tr>")
    sample = "".join(f"<li><code>{esc(t)}</code></li>" for t in res["hinted_completions"][:4])
    return (f"<div class='nudgelib-hint-lab-result'><p><b>{esc(res['question'])}</b> "
            f"(answer {esc(str(res['answer']))}) + hint <i>{esc(res['hint'])}</i></p>"
            f"<table>{''.join(rows)}</table><p>hinted completions:</p><ul>{sample}</ul></div>")


class HintLab:
    """A text box, a button and the result of the last try, redrawn in place."""

    def __init__(self, run: Callable[[str], dict], *, placeholder: str = ""):
        import ipywidgets as W

        self.run, self.last = run, None
        self.box = W.Textarea(placeholder=placeholder or "write a hint that does not give the "
                              "answer away", layout=W.Layout(width="100%"))
        self.button = W.Button(description="Try this hint", button_style="primary")
        self.out = W.HTML()
        self.button.on_click(lambda _: self.try_hint(self.box.value))
        self.widget = W.VBox([self.box, self.button, self.out],
                             layout=W.Layout(border="1px solid #ccc", padding="6px"))
        self.widget.add_class("nudgelib-hint-lab")

    def try_hint(self, hint: str) -> dict | None:
        if not (hint or "").strip():
            self.out.value = "<p>Write a hint first.</p>"
            return None
        self.box.value = hint
        self.out.value = "<p>sampling...</p>"
        try:
            self.last = self.run(hint)
        except Exception as err:  # shown to the learner, not a traceback in the page
            self.out.value = f"<p style='color:#b00'>{html.escape(str(err))}</p>"
            return None
        self.out.value = render(self.last)
        return self.last

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)
