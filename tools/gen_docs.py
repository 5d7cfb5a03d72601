"""Tables in README.md and docs/*.md generated from the registries, so they cannot drift from the code.

    python tools/gen_docs.py            # rewrite every generated table in place
    python tools/gen_docs.py --check    # exit 1 (naming the file and table) when one is out of date

A table lives between two marker comments, anywhere in README.md or docs/*.md:

    <!-- generated: locks -->
    ...                                  (rewritten: do not edit by hand)
    <!-- end generated -->

Tables: `locks`, `stages`, `transforms`, `optimizers`, `tasks`, `models`, `spaces`, `commands`. Only entries defined
inside the trainlock package are listed (no plugin's, no test's). Every table must be placed in some file: --check
fails on a table that is nowhere, on an unknown table name, and on a marker without its end.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = re.compile(r"<!-- generated: ([a-z-]+) -->")
END = "<!-- end generated -->"
THREATS = ("release-time", "training-time")


# ------------------------------------------------------------------ reading descriptions out of the code


def sentence(doc: str | None) -> str:
    """The first sentence of a docstring's first paragraph, on one line."""
    para = " ".join(line.strip() for line in (doc or "").strip().split("\n\n")[0].splitlines())
    m = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)(?<!\bvs)\.(\s|$)", para)  # not "et al. ", "e.g. "
    return (para[: m.start() + 1] if m else para).strip()


def own_module_line(obj, name: str) -> str:
    """The module docstring's first sentence when the module is the entry's own file (it opens with `NAME`)."""
    doc = (inspect.getmodule(obj).__doc__ or "").strip()
    m = re.match(rf"([A-Z][a-z]+ )?`{re.escape(name)}`(\s*\([^)]*\))?:\s*", doc)  # "`name`: ...", "Start `name`: ..."
    text = sentence(doc[m.end() :]) if m else ""
    return text[:1].upper() + text[1:]


def registration_comment(obj, name: str) -> str:
    """The comment on the line that registers `name` (`REGISTRY.add("name", obj)  # what it is`), if any."""
    try:
        src = inspect.getsource(inspect.getmodule(obj))
    except (OSError, TypeError):
        return ""
    m = re.search(rf"""\.add\(\s*["']{re.escape(name)}["'][^\n]*#\s*(.+)""", src)
    return m.group(1).strip() if m else ""


def torch_class(obj) -> str:
    """`torch.optim.X` when a factory without a docstring builds one."""
    try:
        m = re.search(r"torch\.optim\.(\w+)\(", inspect.getsource(obj))
    except (OSError, TypeError):
        return ""
    return f"torch.optim.{m.group(1)}" if m else ""


def describe(obj, name: str, prefer_module: bool = True) -> str:
    tries = [lambda: own_module_line(obj, name), lambda: sentence(obj.__doc__)]
    if not prefer_module:
        tries.reverse()
    tries.append(lambda: "; ".join(t for t in (torch_class(obj), registration_comment(obj, name)) if t))
    for t in tries:
        text = t()
        if text and not text.startswith("Factory options"):
            return text
    return ""


def threat_model(cls: type) -> str:
    """The threat models a lock's certificates name, read from the literals in its own source files."""
    found = set()
    for base in cls.__mro__:
        mod = inspect.getmodule(base)
        if mod is None or mod.__name__ in ("builtins", "trainlock.locks.base"):
            continue
        try:
            src = inspect.getsource(mod)
        except (OSError, TypeError):
            continue
        for m in re.finditer(r"""["']?threat_model["']?\s*[=:]\s*([^\n]+)""", src):  # a keyword or a dict key
            found |= {t for t in THREATS if f'"{t}"' in m.group(1)}
    return " or ".join(t for t in THREATS if t in found) or "-"  # both: it depends on the settings (composite)


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(header: tuple[str, ...], rows: list[tuple]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ------------------------------------------------------------------ the registries, fully loaded


def builtin(registry, name: str, obj) -> bool:
    """Registered by the trainlock package itself: not by a plugin, not by a test."""
    module = getattr(obj, "__module__", "") or ""
    return registry.origin(name) is None and (module == "trainlock" or module.startswith("trainlock."))


def entries(registry, unwrap: Callable = lambda o: o) -> list[tuple[str, object]]:
    out = []
    for name in registry.names():  # names() runs the registry's loader (the optimizer zoo)
        obj = registry.get(name)
        if builtin(registry, name, unwrap(obj)):
            out.append((name, obj))
    return out


def stage_registries() -> dict | None:
    """{kind: Registry} of the attack stages (`trainlock.attacks.stages.STAGES`) but the transforms, which have
    their own table; None while the package has no stages."""
    try:
        mod = importlib.import_module("trainlock.attacks.stages")
    except ModuleNotFoundError as e:
        if e.name and "trainlock.attacks.stages".startswith(e.name):
            return None
        raise
    stages = getattr(mod, "STAGES", None)
    return None if not isinstance(stages, dict) else {k: r for k, r in stages.items() if k != "transforms"}


def locks_table() -> str:
    from trainlock.locks import LOCKS

    rows = []
    for name, cls in entries(LOCKS):
        fields = [
            f.name + (" (private)" if f.metadata.get("private") else "") for f in dataclasses.fields(cls.config_cls)
        ]
        rows.append(
            (f"`{name}`", threat_model(cls), describe(cls, name, prefer_module=False), ", ".join(fields) or "-")
        )
    return table(("lock", "threat model", "what it does", "config fields"), rows)


def options(factory) -> str:
    if not dataclasses.is_dataclass(factory):
        return "-"
    return ", ".join(f.name for f in dataclasses.fields(factory)) or "-"


def stages_table() -> str:
    regs = stage_registries()
    if regs is None:
        return "_No attack-stage registry in this version yet (`trainlock.attacks.stages` does not exist)._"
    rows = [(kind, f"`{n}`", describe(o, n), options(o)) for kind, reg in regs.items() for n, o in entries(reg)]
    return table(("kind", "stage", "what it does", "options"), rows)


def transforms_table() -> str:
    from trainlock.attacks.transforms import TRANSFORMS

    return table(("transform", "what it does"), [(f"`{n}`", describe(o, n)) for n, o in entries(TRANSFORMS)])


def optimizers_table() -> str:
    from trainlock.optimizers import OPTIMIZERS

    return table(("optimizer", "what it is"), [(f"`{n}`", describe(o, n)) for n, o in entries(OPTIMIZERS)])


def tasks_table() -> str:
    from trainlock.tasks import TASKS

    return table(
        ("task", "description"), [(f"`{n}`", s.description or "-") for n, s in entries(TASKS, unwrap=lambda s: s.load)]
    )


def models_table() -> str:
    from trainlock.models import MODELS

    return table(("model", "what it is"), [(f"`{n}`", describe(o, n, prefer_module=False)) for n, o in entries(MODELS)])


def spaces_table() -> str:
    from trainlock.locks import SPACES

    return table(
        ("lock", "its search space (`trainlock tune --lock NAME`)"),
        [(f"`{n}`", f"`{f.__module__}.{f.__name__}`") for n, f in entries(SPACES)],
    )


def commands_table() -> str:
    from trainlock.cli.main import COMMANDS

    return table(("command", "what it does"), [(f"`trainlock {c[0]}`", c[1]) for c in COMMANDS])


TABLES: dict[str, Callable[[], str]] = {
    "locks": locks_table,
    "stages": stages_table,
    "transforms": transforms_table,
    "optimizers": optimizers_table,
    "tasks": tasks_table,
    "models": models_table,
    "spaces": spaces_table,
    "commands": commands_table,
}


REGISTERING = (
    "trainlock.locks",
    "trainlock.tune.spaces",
    "trainlock.attacks.stages",
    "trainlock.attacks.transforms",
    "trainlock.optimizers",
    "trainlock.tasks",
    "trainlock.models",
)


def load_registries() -> None:
    """Import every module that registers something, so each registry is complete before it is listed (the
    optimizer zoo loads when its names are listed)."""
    for name in REGISTERING:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # a package of this list that this version does not have yet
            if not (e.name and name.startswith(e.name)):
                raise


def render_all() -> dict[str, str]:
    load_registries()
    return {name: make() for name, make in TABLES.items()}


# ------------------------------------------------------------------ the files


def files(root: Path = ROOT) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def refresh(text: str, tables: dict[str, str], where: str = "") -> tuple[str, list[str], list[str]]:
    """`text` with every generated block replaced by its table; the names of the blocks that were out of date; and
    of every block it holds. Raises ValueError on an unknown table name or a block without its end marker."""
    out, names, placed, pos = [], [], [], 0
    for m in START.finditer(text):
        if m.start() < pos:
            continue
        name = m.group(1)
        if name not in tables:
            raise ValueError(f"{where}: unknown generated table {name!r}; known: {', '.join(sorted(tables))}")
        end = text.find(END, m.end())
        if end < 0:
            raise ValueError(f"{where}: '<!-- generated: {name} -->' has no '{END}' after it")
        out += [text[pos : m.end()], "\n", tables[name], "\n"]
        if text[m.end() : end] != "\n" + tables[name] + "\n":
            names.append(name)  # out of date
        pos = end
        placed.append(name)
    out.append(text[pos:])
    return "".join(out), names, placed


def run(check: bool, root: Path = ROOT, tables: dict[str, str] | None = None) -> int:
    """Rewrite (or with `check`, compare) every generated table under `root`; 0 when all is in order, 1 when
    --check finds one out of date or a table is placed nowhere, 2 on a malformed marker when rewriting."""
    tables = render_all() if tables is None else tables
    stale, placed = [], set()
    for path in files(root):
        if not path.is_file():
            continue
        old = path.read_text()
        try:
            new, changed, names = refresh(old, tables, str(path.relative_to(root)))
        except ValueError as e:
            print(f"gen_docs: {e}", file=sys.stderr)
            return 1 if check else 2
        placed.update(names)
        if new != old:
            stale.append(f"{path.relative_to(root)} ({', '.join(sorted(set(changed)))})")
            if not check:
                path.write_text(new)
    missing = sorted(set(tables) - placed)
    if missing:
        print(
            f"gen_docs: no file holds the table(s) {', '.join(missing)}; add '<!-- generated: NAME -->' ... "
            f"'{END}' to README.md or a docs/*.md page",
            file=sys.stderr,
        )
        return 1
    if stale:
        verb = "out of date" if check else "rewritten"
        print(
            f"gen_docs: {verb}: {'; '.join(stale)}" + (" (run: python tools/gen_docs.py)" if check else ""),
            file=sys.stderr if check else sys.stdout,
        )
        return 1 if check else 0
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 when a generated table is out of date")
    p.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = p.parse_args(argv)
    return run(args.check, args.root.resolve())


if __name__ == "__main__":
    sys.exit(main())
