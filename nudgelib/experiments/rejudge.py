"""Re-judge committed results with the current verdict rule, from their stored per-seed
numbers (nothing is rerun), and say what changed.

    python -m nudgelib.experiments.rejudge data/results/toy_nurl.json data/results/lm_nurl.json

Each claim gets the rule's fields (``diff``, ``diff_ci95``, ``mde``, ``margin``,
``margin_source``, ``verdict``); the verdict it had before is kept as ``verdict_before``, and the
file records the rule in ``rejudged``. The file is rewritten in place only when ``--write``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from nudgelib.experiments import lm_nurl, toy_nurl

RULE = ("reproduced: the 95 % interval of a - b is on the claimed side of 0; not reproduced: "
        "it rules out an effect as large as the claim's margin (MARGINS); inconclusive "
        "otherwise; MDE at 80 % power, two-sided 5 %")


def rejudge(res: dict) -> tuple[dict, list[dict]]:
    """(the result with re-judged claims, one row per claim: id, before, after, mde)."""
    if res.get("experiment") == "lm_nurl":
        new = lm_nurl.claims(res["per_seed"], res["config"])
    elif "per_seed" in res and "hard" in res:
        new = toy_nurl.claims({"per_seed": res["per_seed"]})
    else:
        raise ValueError("not a toy_nurl or lm_nurl result with per-seed numbers")
    before = {c["id"]: c.get("verdict_before", c["verdict"]) for c in res.get("claims", [])}
    for c in new:
        c["verdict_before"] = before.get(c["id"])
    rows = [{"id": c["id"], "before": c["verdict_before"], "after": c["verdict"],
             "mde": c.get("mde"), "margin": c.get("margin"),
             "diff_ci95": c.get("diff_ci95")} for c in new]
    return {**res, "claims": new, "rejudged": {"rule": RULE, "from": "stored per-seed numbers"}}, rows


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nudgelib.experiments.rejudge",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("files", nargs="+", help="results JSON files")
    ap.add_argument("--write", action="store_true", help="rewrite the files in place")
    args = ap.parse_args(argv)
    for f in args.files:
        path = Path(f)
        new, rows = rejudge(json.loads(path.read_text()))
        print(f"{path}:")
        for r in rows:
            ci = r["diff_ci95"]
            span = f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-"
            mde = f"{r['mde']:.3f}" if r["mde"] is not None else "-"
            mark = "" if r["before"] == r["after"] else "   <- changed"
            print(f"  {r['id']:<18} {str(r['before']):<15} -> {r['after']:<15} CI {span:<17} "
                  f"MDE {mde:<6} margin {r['margin']}{mark}")
        if args.write:
            toy_nurl.save_results(new, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
