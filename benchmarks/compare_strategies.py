"""Final accuracy, average incremental accuracy and forgetting of every continual strategy of
cfs on real split-CIFAR-10, same data, backbone, epochs and seed for all.

    python benchmarks/compare_strategies.py [--train-per-class 150 --epochs 3 ...]

Acceptance (issue 3): replay, iCaRL and DER++ beat finetune's final accuracy by >= 15 points;
LwF, EWC and each distillation regularizer forget less than finetune. The check is printed.
"""

from __future__ import annotations

import argparse
import json
import sys

from cl_setup import add_arguments, load_setting, run_cfs, table

REHEARSAL = ("replay", "replay-er", "icarl", "derpp")
REGULARIZERS = ("lwf", "ewc", "ewc-online", "kd", "clkd", "nckd", "trg", "pckd")


def strategies(memory: int) -> list[tuple[str, str, dict | None]]:
    """(label, spec, options) of every run."""
    return [
        ("finetune", "finetune", None), ("joint", "joint", None),
        ("replay", "replay", {"replay": {"budget": memory}}),
        ("replay-er", "replay", {"replay": {"budget": memory, "mode": "batch"}}),
        ("icarl", "icarl", {"icarl": {"budget": memory}}),
        ("derpp", "derpp", {"derpp": {"buffer": memory}}),
        ("lwf", "lwf", None), ("ewc", "ewc", None), ("ewc-online", "ewc", {"ewc": {"online": True}}),
        ("kd", "kd", None), ("clkd", "clkd", None), ("nckd", "nckd", None), ("trg", "trg", None), ("pckd", "pckd", None),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(p)
    p.add_argument("--only", nargs="*", help="run only these labels (finetune is always run)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    setting = load_setting(args)
    print(setting.describe(), flush=True)
    rows = []
    for label, spec, options in strategies(args.memory):
        if args.only and label not in args.only and label != "finetune":
            continue
        rows.append((label, run_cfs(setting, spec, options)))
        print(f"  {label}: {json.dumps({k: round(v, 4) for k, v in rows[-1][1].items()})}", file=sys.stderr, flush=True)
    cols = [("final acc %", "final", ".1f"), ("avg inc acc %", "avg_inc", ".1f"), ("forgetting %", "forgetting", ".1f"),
            ("time s", "seconds", ".0f")]
    pct = [(n, {k: (100 * v if k != "seconds" and k != "train_seconds" else v) for k, v in r.items()}) for n, r in rows]
    print(table(pct, cols))
    res = dict(rows)
    ft = res["finetune"]
    ok = True
    for name in REHEARSAL:
        if name in res:
            gain = 100 * (res[name]["final"] - ft["final"])
            ok &= gain >= 15
            print(f"{name}: final accuracy {gain:+.1f} points vs finetune ({'ok' if gain >= 15 else 'MISSED: >= 15'})")
    for name in REGULARIZERS:
        if name in res:
            d = 100 * (res[name]["forgetting"] - ft["forgetting"])
            ok &= d < 0
            print(f"{name}: forgetting {d:+.1f} points vs finetune ({'ok' if d < 0 else 'MISSED: must be lower'})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setting": setting.describe(), "results": res}, f, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
