"""Where each rule ends the critical period when the same training is planned for longer.

No training: reads the full-recipe (repeats-3 throughout) rotation curves recorded by
`paper_repro.py` (seeds 0-2) and `tune_relative.py` (tuning seed 100). With the step
schedule at 50% and 75% of the budget, epochs 1..E0/2 of an E0-epoch run are exactly the
first epochs of any run with budget E >= E0: same learning rate (the first step comes
after epoch E/2), same seeded sample order and augmentation, and a full-recipe run never
switches. So the rules can be applied to that prefix under larger budgets E without
retraining. A rule that has not fired within the prefix is reported as "> E0/2".

The paper rule rescales epochs by E-1, so its threshold (rotation growing by less than
1/(E-1) per epoch) tightens as E grows; `relative` compares rates per epoch and should
not move.

    .venv/bin/python bench/budget_dependence.py
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from _common import RESULTS, command_line, now_iso, setup_logging, write_json

from trainables.method.criteria import end_epoch

log = logging.getLogger("bench.budget_dependence")

BUDGETS = (30, 45, 60, 100, 200)
RULES: dict[str, dict[str, Any]] = {
    "paper": {"name": "paper"},
    "relative (0.25, 2: library default)": {"name": "relative", "ratio": 0.25, "patience": 2},
    "relative (0.5, 1: benchmark setting)": {"name": "relative", "ratio": 0.5, "patience": 1},
    "fixed 12.5%": {"name": "fixed", "fraction": 0.125},
}


def _curves() -> list[dict[str, Any]]:
    """(source, seed, budget E0, rotation curve) of every recorded full-recipe run."""
    out = []
    repro = json.loads((RESULTS / "paper_repro.json").read_text())
    budget = int(repro["spec"]["train"]["epochs"])
    for t in repro["trials"]:
        if t["arm"] == "repeats3":
            rot = [v for v in t["curves"]["rotation/mean"] if v is not None]
            out.append({"source": "paper_repro", "seed": t["seed"], "e0": budget, "rot": rot})
    tuning = json.loads((RESULTS / "tune_relative.json").read_text())
    for r in tuning["runs"]:
        if r["variant"] == "repeats3":
            e0 = int(tuning["train"]["epochs"])
            out.append(
                {"source": "tune_relative", "seed": r["seed"], "e0": e0, "rot": r["rotation"]}
            )
    return out


def decide(rot: list[float], e0: int, budget: int, rule: dict[str, Any]) -> int | str:
    """The rule's end epoch under `budget`, from the budget-invariant prefix of the curve."""
    prefix = rot[: e0 // 2]
    if rule["name"] == "fixed":
        end = math.ceil(rule["fraction"] * budget - 1e-9)
        return end  # needs no curve
    params = {k: v for k, v in rule.items() if k != "name"}
    end = end_epoch(rule["name"], prefix, budget, **params)
    return end if end is not None else f"> {len(prefix)}"


def main() -> None:
    setup_logging()
    curves = _curves()
    table: dict[str, dict[str, list[int | str]]] = {}
    for label, rule in RULES.items():
        table[label] = {
            str(b): [decide(c["rot"], c["e0"], b, rule) for c in curves] for b in BUDGETS
        }
        log.info("%s: %s", label, table[label])
    write_json(
        RESULTS / "budget_dependence.json",
        {
            "command": command_line(),
            "date": now_iso(),
            "curves": [{k: c[k] for k in ("source", "seed", "e0")} for c in curves],
            "budgets": list(BUDGETS),
            "ends": table,
        },
    )
    print("| rule | " + " | ".join(f"E = {b}" for b in BUDGETS) + " |")
    print("|---" * (len(BUDGETS) + 1) + "|")
    for label, row in table.items():
        cells = [", ".join(str(v) for v in row[str(b)]) for b in BUDGETS]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
