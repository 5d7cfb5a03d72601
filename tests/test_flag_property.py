"""Every command x every numeric flag x {0, -1, nan, inf, 1e30, abc} (issue 24): the command ends with exit 0 and
a finite result, or exit 2 and one error line (only that line when the parser refuses it), never a traceback,
within a time limit. The flags are discovered from the parsers `trainlock.cli.main` builds, so a new command
or flag joins the matrix by itself (a command with numeric flags and no base command line here fails the
coverage test). Each case runs `main` in this process on a tiny MLP and small digits subsets.

The default suite runs a deterministic sample (every flag once, the values rotating); `-m slow` runs the
whole matrix."""

from __future__ import annotations

import argparse
import re
import signal

import pytest

from trainlock.cli import main
from trainlock.cli.main import COMMANDS, build_parser

VALUES = ("0", "-1", "nan", "inf", "1e30", "abc")
LIMIT_S = 60  # per case; the slowest accepted case (a tune trial) takes a few seconds
SUBSET = ["--train-samples", "64", "--test-samples", "64"]

# one cheap, valid command line per command that has numeric flags; M: the model directory, W: a fresh directory
BASE = {
    "train": [
        *["train", "--task", "digits", "--model", "mlp", "--model-kwargs", '{"hidden": [8]}'],
        *["--max-steps", "2", "--out", "W/new", *SUBSET],
    ],
    "eval": ["eval", "M", "--test-samples", "64"],
    "lock": ["lock", "M", "--out", "W/new", "--max-steps", "2", *SUBSET],
    "attack": ["attack", "M", "--task", "digits", "--max-steps", "2", "--no-scratch", "--references", *SUBSET],
    "diagnose": ["diagnose", "M", "--samples", "8", "--out", "W/diag"],
    "compact": ["compact", "M", "--lambdas", "0.1", "--steps", "2"],
    "relearn": ["relearn", "M", "--unlearn-max-steps", "2", "--relearn-max-steps", "2", "--lock-max-steps", "2"],
    "redteam": [
        *["redteam", "M", "--task", "digits", "--budget", "1", "--max-steps", "2", "--out", "W/rt"],
        *["--references", *SUBSET],
    ],
    "headstart": [
        *["headstart", "M", "--task", "digits", "--budgets", "32", "--steps", "2", "--lrs", "0.01"],
        *["--references", "--out", "W/hs", "--test-samples", "64"],
    ],
    "tune": [
        *["tune", "M", "--attack-task", "digits", "--trials", "1", "--budget", "12", "--steps", "2"],
        *["--out", "W/tune", *SUBSET],
    ],
    "locks": [
        *["locks", "--run", "M", "--specs", '{"base": null}', "--attack-tasks", "digits", "--budget", "1"],
        *["--steps", "2", "--out", "W/locks", *SUBSET],
    ],
    "reproduce": ["reproduce", "table2", "--out", "W/rep"],  # the reproduction itself is stubbed (see _stub)
}
GLOBAL = {"--threads": "eval"}  # flags of the top-level parser, tried on this command


def numeric_flags(command: str) -> list[str]:
    """The flags of `command` that take a number (int or float types, the CLI's typed parsers included)."""
    p = build_parser(only=[command])
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return [
        a.option_strings[0]
        for a in sub.choices[command]._actions
        if a.option_strings and a.type is not None and a.type is not str and a.help != argparse.SUPPRESS
    ]


def _cases() -> list[tuple[str, str, str]]:
    out = [(command, flag, v) for flag, command in GLOBAL.items() for v in VALUES]
    for command in (c[0] for c in COMMANDS if c[3] is not None):
        out += [(command, flag, v) for flag in numeric_flags(command) for v in VALUES]
    return out


CASES = _cases()
# the default suite: every flag with one value, the value rotating over the flags (deterministic)
SAMPLE = [
    (command, flag, VALUES[i % len(VALUES)]) for i, (command, flag) in enumerate(dict.fromkeys(c[:2] for c in CASES))
]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir):
    return tiny_model_dir


class _TooSlow(BaseException):
    pass


def _alarm(signum, frame):
    raise _TooSlow()


def _stub(monkeypatch, tmp_path):
    """`reproduce TABLE`: the flags are parsed and checked for real; the hours-long reproduction is replaced by a
    stub that writes its table, so an accepted value ends in exit 0 within the time limit."""
    import trainlock.paper.repro as repro

    def reproduce(name, out, **kw):
        from pathlib import Path

        Path(out).mkdir(parents=True, exist_ok=True)
        Path(out, "table.md").write_text(f"{name}: stub\n")
        return {"runs": 0, "plots": []}

    monkeypatch.setattr(repro, "reproduce", reproduce)


def run_case(command, flag, value, model_dir, tmp_path, capsys, monkeypatch):
    if command == "reproduce":
        _stub(monkeypatch, tmp_path)
    if command == "tune":  # Optuna's log handler holds the stderr of the test that imported it; give it this one's
        import sys

        import optuna

        handler = optuna.logging._default_handler
        if handler is not None:
            monkeypatch.setattr(handler, "stream", sys.stderr)
            if hasattr(handler.formatter, "stream"):  # colorlog's formatter asks its own stream isatty()
                monkeypatch.setattr(handler.formatter, "stream", sys.stderr)
    base = [
        a.replace("W/", f"{tmp_path}/") if a.startswith("W/") else str(model_dir) if a == "M" else a
        for a in BASE[command]
    ]
    argv = [flag, value, *base] if flag in GLOBAL else [*base, flag, value]
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # the parser refuses
            code = e.code
    except _TooSlow:
        pytest.fail(f"{argv}: still running after {LIMIT_S} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err + out, (argv, err)
    assert code in (0, 2), (argv, code, err[-2000:])
    if code == 2:
        errors = [line for line in lines if "error:" in line]
        assert len(errors) == 1 and lines[-1] == errors[0], (argv, err)  # one line says what is wrong, last
        if "argument " in errors[0]:  # refused by the parser: that line alone, naming the flag
            assert len(lines) == 1 and flag in errors[0], (argv, err)
        return "refused"
    results = [line for line in out.lower().splitlines() if "diverged" not in line and "non-finite" not in line]
    assert not re.search(r"\bnan\b", "\n".join(results)), (argv, out)  # an accepted value: a finite result
    return "ran"


def test_every_command_with_numeric_flags_has_a_base_line():
    missing = sorted({c for c, _, _ in CASES} - set(BASE))
    assert not missing, f"give these commands a cheap command line in BASE: {missing}"
    assert len({(c, f) for c, f, _ in CASES}) > 100  # the discovery found the flags (config-built ones included)


def _id(case):
    return "-".join(case)


@pytest.mark.parametrize("case", SAMPLE, ids=_id)
def test_numeric_flag_sample(case, model_dir, tmp_path, capsys, monkeypatch):
    run_case(*case, model_dir, tmp_path, capsys, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_numeric_flag_matrix(case, model_dir, tmp_path, capsys, monkeypatch):
    run_case(*case, model_dir, tmp_path, capsys, monkeypatch)
