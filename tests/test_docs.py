"""The docs stay true: README.md is short and opens with the two set-up commands, the tables generated from the
registries are in sync with them (`tools/gen_docs.py`), links between the pages resolve, and (slow tier) the
snippets of README.md and docs/extending.md run against the current code."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCE = re.compile(r"^[ \t]*```(\w*)[ \t]*\n(.*?)^[ \t]*```[ \t]*$", re.M | re.S)


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "tools" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return _gen_docs()


@pytest.fixture(scope="module")
def tables(gen):
    return gen.render_all()


def _blocks(text: str, name: str) -> list[str]:
    """The contents of every generated block called `name` in `text`."""
    return re.findall(rf"<!-- generated: {name} -->\n(.*?)<!-- end generated -->", text, re.S)


def _all_docs() -> str:
    return "\n".join(p.read_text() for p in [README, *sorted(DOCS.glob("*.md"))])


def _env() -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.pop("TRAINLOCK_PLUGINS", None)
    return env


# ---------------------------------------------------------------- README


def test_readme_is_at_most_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= 200, f"README.md has {n} lines; move long material into docs/ and link it"


def test_readme_opens_with_the_two_setup_commands_and_they_exist():
    lines = [x for x in README.read_text().splitlines() if x.strip()]
    assert lines[0] == "# trainlock"
    assert lines[1].startswith("```") and lines[2].startswith("make demo ") and lines[3].startswith("make test ")
    assert lines[4] == "```"
    targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert "demo" in targets and "test" in targets


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_resolve():
    """Every relative link names a file that exists, and its #anchor a heading of that file."""
    missing = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#\s]+)(?:#([^)]*))?\)", page.read_text()):
            path = page.parent / target
            if "://" in target:
                continue
            if not path.exists():
                missing.append(f"{page.relative_to(ROOT)} -> {target}")
            elif anchor and anchor not in {_slug(h) for h in re.findall(r"^#+ (.+)$", path.read_text(), re.M)}:
                missing.append(f"{page.relative_to(ROOT)} -> {target}#{anchor}")
    assert missing == []


# ---------------------------------------------------------------- generated tables


def test_generated_tables_are_up_to_date():
    """`python tools/gen_docs.py --check` in a fresh process: every table placed, none stale."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_docs.py"), "--check"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr + r.stdout


@pytest.mark.parametrize("table", ["locks", "stages", "transforms", "optimizers", "tasks", "models", "commands"])
def test_every_registered_name_is_in_its_table(gen, table):
    gen.load_registries()
    import trainlock.attacks.transforms as transforms
    import trainlock.locks as locks
    import trainlock.models as models
    import trainlock.optimizers as optimizers
    import trainlock.tasks as tasks
    from trainlock.cli.main import COMMANDS

    registries = {
        "locks": [locks.LOCKS],
        "transforms": [transforms.TRANSFORMS],
        "optimizers": [optimizers.OPTIMIZERS],
        "tasks": [tasks.TASKS],
        "models": [models.MODELS],
        "stages": list((gen.stage_registries() or {}).values()),
    }
    if table == "commands":
        names = [f"trainlock {c[0]}" for c in COMMANDS]
    else:  # what the trainlock package registers (a test's or a plugin's entries are not documented)
        names = [n for reg in registries[table] for n, _ in gen.entries(reg, unwrap=lambda o: getattr(o, "load", o))]
    blocks = _blocks(_all_docs(), table)
    assert blocks, f"no '<!-- generated: {table} -->' block in README.md or docs/*.md"
    for block in blocks:
        missing = [n for n in names if f"`{n}`" not in block]
        assert missing == [], f"{table}: {missing} registered but not in the docs: run python tools/gen_docs.py"


def test_check_fails_on_a_stale_or_missing_table(gen, tables, tmp_path):
    (tmp_path / "docs").mkdir()
    for page in [README, *DOCS.glob("*.md")]:
        (tmp_path / page.relative_to(ROOT)).write_text(page.read_text())
    assert gen.run(True, tmp_path, tables) == 0
    ref = tmp_path / "docs" / "reference.md"
    text = ref.read_text()
    row = next(x for x in text.splitlines() if x.startswith("| `specdef` |"))
    ref.write_text(text.replace(row + "\n", ""))  # a registered lock missing from the docs
    assert gen.run(True, tmp_path, tables) == 1
    assert gen.run(False, tmp_path, tables) == 0 and row in ref.read_text()  # rewritten
    for page in [tmp_path / "README.md", *(tmp_path / "docs").glob("*.md")]:  # a table placed nowhere
        page.write_text(
            re.sub(r"<!-- generated: tasks -->.*?<!-- end generated -->\n?", "", page.read_text(), flags=re.S)
        )
    assert gen.run(True, tmp_path, tables) == 1


def test_refresh_refuses_unknown_or_unterminated_blocks(gen, tables):
    with pytest.raises(ValueError, match="unknown generated table"):
        gen.refresh("<!-- generated: nope -->\n<!-- end generated -->\n", tables)
    with pytest.raises(ValueError, match="has no"):
        gen.refresh("<!-- generated: locks -->\n| lock |\n", tables)
    text = "before\n<!-- generated: commands -->\nold\n<!-- end generated -->\nafter\n"
    new, changed, names = gen.refresh(text, tables)
    assert changed == names == ["commands"] and new.startswith("before\n") and new.endswith("after\n")
    assert "old" not in new and gen.refresh(new, tables)[:2] == (new, [])  # idempotent


def test_descriptions_come_from_the_code(gen):
    assert gen.sentence("Clip the spectrum (Smith et al. 2020). More text.") == "Clip the spectrum (Smith et al. 2020)."
    assert gen.sentence("One line\ncontinued.\n\nSecond paragraph.") == "One line continued."


# ---------------------------------------------------------------- snippets (slow: they train and attack)


def _snippets(text: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """({file name: source} of the `# file: NAME` blocks, [(language, source)] of the `# test` blocks in order)."""
    files, runs = {}, []
    for lang, body in FENCE.findall(text):
        first = body.split("\n", 1)[0].strip()
        if lang == "python" and first.startswith("# file:"):
            files[first.split(":", 1)[1].strip()] = body
        elif lang in ("python", "bash") and first == "# test":
            runs.append((lang, body))
    return files, runs


def _run(lang: str, source: str, cwd: Path) -> None:
    argv = [sys.executable, "-c", source] if lang == "python" else ["bash", "-euo", "pipefail", "-c", source]
    r = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=_env(), timeout=900)
    assert r.returncode == 0, (
        f"this {lang} snippet failed:\n{source}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-3000:]}"
    )


def test_extending_md_has_a_snippet_for_each_kind():
    files, runs = _snippets((DOCS / "extending.md").read_text())
    assert {"max_abs.py", "noisy_start.py", "zero_bias.py", "nadam.py", "parity_task.py", "tiny_linear.py"} <= set(
        files
    )
    assert len(runs) >= 5


@pytest.mark.slow
def test_extending_md_snippets_run(tmp_path):
    files, runs = _snippets((DOCS / "extending.md").read_text())
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    for lang, source in runs:
        _run(lang, source, tmp_path)


@pytest.mark.slow
def test_readme_python_example_runs(tmp_path):
    (block,) = [b for lang, b in FENCE.findall(README.read_text()) if lang == "python"]
    make_base = re.search(r"# made by: (trainlock train .*)$", block, re.M).group(1)
    _run("bash", make_base, tmp_path)
    _run("python", block, tmp_path)
