"""Numbers for notes/architecture.md: the largest functions, the longest files and the ruff rule families.

python tools/arch_stats.py [SRC_DIR]     # default: src/trainlock
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import tomllib


def functions(src: Path) -> list[tuple[int, str]]:
    out = [
        (node.end_lineno - node.lineno + 1, f"{path.relative_to(src.parent)}:{node.name}")
        for path in sorted(src.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]
    return sorted(out, reverse=True)


def main() -> None:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "src/trainlock")
    fns = functions(src)
    files = sorted(
        ((len(p.read_text().splitlines()), str(p.relative_to(src.parent))) for p in src.rglob("*.py")), reverse=True
    )
    root = src.parents[1]
    rules = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["select"]
    readme = len((root / "README.md").read_text().splitlines())
    print(f"largest functions: {', '.join(f'{n} lines {name}' for n, name in fns[:3])}")
    print(f"longest files: {', '.join(f'{n} {name}' for n, name in files[:3])}")
    print(f"python files: {len(files)}, lines: {sum(n for n, _ in files)}")
    print(f"ruff rule families: {len(rules)} ({', '.join(rules)}); README: {readme} lines")


if __name__ == "__main__":
    main()
