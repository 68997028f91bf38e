"""A corpus of hostile model outputs for the verifier: each must be handled without an
exception, within the deadline, and without anything being executed.

``CANARY`` is a file path that code-injection strings try to create; the tests check that it
never appears.
"""

import os
import tempfile

CANARY = os.path.join(tempfile.gettempdir(), "nudgelib_hostile_canary")

_INJECT = [
    f"__import__('os').system('touch {CANARY}')",
    f"eval(\"__import__('os').system('touch {CANARY}')\")",
    f"exec(\"open('{CANARY}','w').write('x')\")",
    f"open('{CANARY}', 'w').write('pwned')",
    f"__import__('subprocess').run(['touch', '{CANARY}'])",
    f"(lambda: __import__('os').system('touch {CANARY}'))()",
    f"globals()['__builtins__'].__import__('os').system('touch {CANARY}')",
    "().__class__.__bases__[0].__subclasses__()",
    "$(touch " + CANARY + ")",
    "`touch " + CANARY + "`",
    "; rm -rf / #",
]


def hostile_outputs() -> list[tuple[str, object]]:
    """(label, completion) pairs; completions are strings or chat-message shapes."""
    items: list[tuple[str, object]] = []
    for i, code in enumerate(_INJECT):
        items.append((f"inject-boxed-{i}", f"\\boxed{{{code}}}"))
        items.append((f"inject-phrase-{i}", f"The answer is {code}"))
    items += [
        ("tower-caret", "\\boxed{9^{9^{9^{9^{9}}}}}"),
        ("tower-stars", "\\boxed{9**9**9**9**9}"),
        ("tower-10", "\\boxed{10^{10^{10^{10^{10^{10}}}}}}"),
        ("factorial-tower", "\\boxed{(10^{100})!!}"),
        ("factorial", "\\boxed{100000000!}"),
        ("huge-int", "\\boxed{" + "9" * 5000 + "}"),
        ("huge-power-sum", "\\boxed{" + "+".join(["2^{99999}"] * 200) + "}"),
        ("5000-open-braces", "\\boxed{" + "{" * 5000),
        ("5000-close-braces", "}" * 5000 + "\\boxed{1}" + "}" * 5000),
        ("5000-unbalanced-mixed", "\\boxed{" + "{}{" * 5000),
        ("deep-nesting-frac", "\\boxed{" + "\\frac{1}{" * 400 + "2" + "}" * 400 + "}"),
        ("deep-parens", "\\boxed{" + "(" * 3000 + "1" + ")" * 3000 + "}"),
        ("deep-sqrt", "\\boxed{" + "\\sqrt{" * 500 + "2" + "}" * 500 + "}"),
        ("1MB-plain", "x" * (1 << 20)),
        ("1MB-boxed-repeat", "\\boxed{" * ((1 << 20) // 7)),
        ("1MB-then-answer", "a" * (1 << 20) + " \\boxed{42}"),
        ("1MB-hashes", "#### " * ((1 << 20) // 5)),
        ("1MB-inside-box", "\\boxed{" + "1+" * (1 << 19) + "1}"),
        # long blank runs after an answer phrase: each was quadratic in extraction once (129.8 s at
        # 10^5 characters); at 10^5 and 10^6 the whole call must stay inside its deadline
        *((f"blank-run-{n:.0e}-{name}", text)
          for n in (10**5, 10**6)
          for name, text in (("answer-phrase", "The answer" + " " * n),
                             ("answer-is-newlines", "the answer is" + "\n" * n),
                             ("bold-answer", "answer **" + " " * n + "x"),
                             ("hashes", "#### 1" + " " * n + "x"),
                             ("hashes-tabs", ("#### 1" + " \t" * (n // 20) + "x\n") * 9),
                             ("boxed", "\\boxed" + " " * n),
                             ("boxed-brace", "\\boxed{" + " " * n + "7}"))),
        ("nul-bytes", "\\boxed{4\x002}\x00\x00"),
        ("lone-surrogate", "\\boxed{\ud800 42 \udfff}"),
        ("only-surrogates", "\udc80" * 1000),
        ("empty", ""),
        ("whitespace", " \n\t " * 100),
        ("empty-box", "\\boxed{}"),
        ("none", None),
        ("int-object", 12345),
        ("bytes", b"\\boxed{\xff\xfe 7}"),
        ("chat-list", [{"role": "assistant", "content": "\\boxed{9^{9^{9^{9}}}}"}]),
        ("chat-weird", [{"role": "assistant", "content": None}, 3, "x"]),
        ("dict-no-content", {"role": "assistant"}),
        ("latex-macro-def", "\\boxed{\\def\\x{\\x\\x}\\x}"),
        ("newcommand-loop", "\\boxed{\\newcommand{\\a}{\\a\\a}\\a}"),
        ("input-file", "\\boxed{\\input{/etc/passwd}}"),
        ("matrix-bomb", "\\boxed{\\begin{pmatrix}" + "1&" * 2000 + "1\\end{pmatrix}^{99999}}"),
        ("equation-chain", "\\boxed{" + "=".join(["x"] * 3000) + "}"),
        ("set-bomb", "\\boxed{\\{" + ",".join(str(i) for i in range(20000)) + "\\}}"),
        ("interval-garbage", "\\boxed{[[[(((]]])))}"),
        ("unicode-mix", "\\boxed{４２ ٤٢ 四十二 ⁴²}"),
        ("rtl-override", "\\boxed{\u202e24\u202c}"),
        ("zero-width", "\\boxed{4\u200b2}"),
        ("backslashes", "\\" * 10000),
        ("format-string", "\\boxed{{0.__class__}}"),
        ("regex-bomb", "the answer is " + "a" * 50000 + "!"),
        ("many-answers", "The answer is 1. " * 20000),
        ("integral-hard", "\\boxed{\\int_0^\\infty e^{-x^{99}} \\sin(x^{77}) dx}"),
        ("sum-infinite", "\\boxed{\\sum_{n=1}^{\\infty} n^{n^{n}}}"),
        ("limit", "\\boxed{\\lim_{x\\to 0} (1+x)^{1/x^{999}}}"),
    ]
    return items
