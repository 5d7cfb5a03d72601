"""One line per measured figure and its goal, in a fixed form that `run_all.py` collects:

    GOAL | figure | measured | goal | ok, MISS or n/a

n/a: the figure cannot be measured on this machine (`unmeasured` says why); it counts neither as met nor missed.

Each benchmark still prints its own table; `report` adds the line `make bench` summarizes.
"""

from __future__ import annotations

import operator

PREFIX = "GOAL |"
_OPS = {"<=": operator.le, ">=": operator.ge}


def report(figure: str, value: float, op: str, target: float, unit: str = "x") -> bool:
    """Print the figure's line (value formatted with 3 significant digits, then `unit`); returns whether it met
    the goal `value op target` (op "<=" or ">=")."""
    ok = _OPS[op](value, target)
    print(f"{PREFIX} {figure} | {value:.3g}{unit} | {op} {target:g}{unit} | {'ok' if ok else 'MISS'}", flush=True)
    return ok


def unmeasured(figure: str, op: str, target: float, why: str, unit: str = "x") -> None:
    """Print the figure's line for a goal this machine cannot measure, with the reason."""
    print(f"{PREFIX} {figure} | not measured: {why} | {op} {target:g}{unit} | n/a", flush=True)
