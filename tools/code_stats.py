"""Code statistics for notes: lines per layer and per package, the largest files, and the public
functions with more than 8 parameters. The layers are those of tests/test_layers.py.

    python tools/code_stats.py [REPO_ROOT]        # default: the current directory
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def layers_of(repo: Path) -> list[tuple[str, set[str]]]:
    sys.path.insert(0, str(repo / "tests"))
    try:
        from test_layers import LAYERS
    finally:
        sys.path.pop(0)
    return LAYERS


def n_params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = node.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs if x.arg not in ("self", "cls")]
    return len(names) + bool(a.vararg) + bool(a.kwarg)


def main(repo: Path) -> None:
    root = repo / "src" / "trainlock"
    rank = {top: name for name, tops in layers_of(repo) for top in tops}
    per_top: dict[str, int] = {}
    sizes, over = [], []
    for f in sorted(root.rglob("*.py")):
        rel = f.relative_to(root)
        top = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        text = f.read_text()
        n = len(text.splitlines())
        per_top[top] = per_top.get(top, 0) + n
        sizes.append((n, str(rel)))
        over.extend(
            (n_params(node), f"{rel}:{node.lineno} {node.name}")
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and not node.name.startswith("_")
            and n_params(node) > 8
        )
    per_layer: dict[str, int] = {}
    for top, n in per_top.items():
        layer = rank.get(top, "(facade)" if top == "__init__" else "(no layer)")
        per_layer[layer] = per_layer.get(layer, 0) + n
    print("lines per layer (lowest first):")
    for name, _ in layers_of(repo):
        print(f"  {name:<12}{per_layer.pop(name, 0):>7}")
    for name, n in per_layer.items():
        print(f"  {name:<12}{n:>7}")
    print(f"  {'total':<12}{sum(per_top.values()):>7}")
    print(
        "lines per package / module:", ", ".join(f"{k} {v}" for k, v in sorted(per_top.items(), key=lambda kv: -kv[1]))
    )
    print("largest files:", ", ".join(f"{p} ({n})" for n, p in sorted(sizes, reverse=True)[:3]))
    print(f"public functions over 8 parameters: {len(over)}")
    for n, where in sorted(over, reverse=True):
        print(f"  {n:>2} {where}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
