"""The package's layers: a module may import its own layer and the layers below it, never one above.

Every import counts, also those inside functions (a late import of a higher layer is still a cycle in
the design). The picture is in the README's Layout section; this list is its source of truth.
"""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "trainlock"

# lowest first; each entry: the layer's name and the top-level modules / packages it holds
LAYERS = [
    ("core", {"_version", "registry", "plugins", "config", "plotting", "atomic"}),
    ("foundation", {"linalg", "models", "tasks", "optimizers"}),
    ("train", {"train"}),
    ("io", {"io"}),
    ("locks", {"locks"}),
    ("certify", {"certify"}),
    ("attacks", {"attacks"}),
    ("api", {"api"}),
    ("studies", {"red_team", "analysis", "tune"}),
    ("paper", {"paper"}),
    ("cli", {"cli", "__main__"}),
]
RANK = {top: i for i, (_, tops) in enumerate(LAYERS) for top in tops}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "trainlock" and len(parts) > 1 else None


def _module_name(path: Path, src: Path) -> tuple[str, bool]:
    rel = path.relative_to(src.parent).with_suffix("")
    parts = list(rel.parts)
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def imports(path: Path, src: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module) of every trainlock import in `path`, relative ones resolved."""
    name, is_pkg = _module_name(path, src)
    pkg = name.split(".") if is_pkg else name.split(".")[:-1]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ".".join(pkg[: len(pkg) - node.level + 1]) if node.level else ""
            mod = ".".join(p for p in (base, node.module or "") if p)
            targets = [mod] if node.module else [f"{mod}.{a.name}" for a in node.names]
            out += [(node.lineno, t) for t in targets if t.startswith("trainlock")]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("trainlock")]
    return out


def violations(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        name, _ = _module_name(path, src)
        top = _top(name)
        if top is None:  # trainlock/__init__.py: the lazy facade may name anything
            continue
        for line, target in imports(path, src):
            t = _top(target)
            if t is not None and RANK[t] > RANK[top]:
                bad.append(
                    f"{path.relative_to(src.parent)}:{line} ({LAYERS[RANK[top]][0]}) imports {target} "
                    f"({LAYERS[RANK[t]][0]})"
                )
    return bad


def test_every_module_has_a_layer():
    tops = {
        p.stem if p.is_file() else p.name
        for p in SRC.iterdir()
        if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()
    }
    assert tops - set(RANK) == set(), "add the new module to LAYERS (and to the README's picture)"


def test_no_lower_layer_imports_a_higher_one():
    assert violations() == []


def test_the_checker_sees_a_violation(tmp_path):
    """The check itself can fail: upward imports planted in a copy of the tree are reported, a late one
    inside a function and an absolute one alike; downward and same-layer imports are not."""
    src = tmp_path / "trainlock"
    (src / "linalg").mkdir(parents=True)
    (src / "linalg" / "planted.py").write_text(
        "from ..registry import Registry\nfrom . import spectral\n"
        "def f():\n    from ..red_team import redteam\n    import trainlock.cli.main\n"
    )
    found = violations(src)
    assert found == [
        "trainlock/linalg/planted.py:4 (foundation) imports trainlock.red_team (studies)",
        "trainlock/linalg/planted.py:5 (foundation) imports trainlock.cli.main (cli)",
    ]


@pytest.mark.parametrize("layer", [name for name, _ in LAYERS])
def test_layers_are_listed_once(layer):
    assert sum(name == layer for name, _ in LAYERS) == 1
