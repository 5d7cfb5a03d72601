"""Habits the code keeps: the library logs instead of printing, and public functions take few parameters."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "trainlock"
MAX_PARAMS = 8  # more than this: group them in a config dataclass


def _files(skip: tuple[str, ...] = ()):
    for path in sorted(SRC.rglob("*.py")):
        if path.relative_to(SRC).parts[0] not in skip:
            yield path, ast.parse(path.read_text())


def test_the_library_does_not_print():
    """Progress and logs go through `logging` and tqdm; only the command line prints."""
    found = [
        f"{path.relative_to(SRC.parent)}:{node.lineno}"
        for path, tree in _files(skip=("cli",))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
    ]
    assert found == []


def _n_params(node) -> int:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return len(names) + bool(a.vararg) + bool(a.kwarg)


def test_public_functions_take_at_most_eight_parameters():
    over = [
        f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({_n_params(node)})"
        for path, tree in _files()
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and not node.name.startswith("_")
        and _n_params(node) > MAX_PARAMS
    ]
    assert over == []


def test_the_parameter_count_sees_every_kind():
    tree = ast.parse("def f(a, /, b, *c, d, e=1, **f): pass\ndef g(self, x): pass")
    assert [_n_params(n) for n in tree.body] == [6, 1]
