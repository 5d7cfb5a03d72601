"""Start-up: `import trainlock` and `trainlock --help` load no red team, optimizer zoo or analysis code."""

import os
import subprocess
import sys

import pytest

HEAVY = (
    "trainlock.red_team",
    "trainlock.optimizers.",
    "trainlock.analysis",
    "trainlock.paper",
    "trainlock.attacks.transforms",
    "heavyball",
    "optuna",
    "pytorch_optimizer",
    "matplotlib",
)


def _loaded(code: str) -> list[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('MODULES', *sorted(sys.modules))"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return out.stdout.split("MODULES", 1)[1].split()


def _heavy(modules: list[str]) -> list[str]:
    return [m for m in modules if m.startswith(HEAVY) and m != "trainlock.optimizers.base"]


def test_import_trainlock_loads_nothing_but_itself():
    mods = _loaded("import trainlock")
    assert [m for m in mods if m.startswith("trainlock")] == ["trainlock", "trainlock._version"]
    assert "torch" not in mods


def test_top_level_help_is_light():
    mods = _loaded(
        "import sys\nfrom trainlock.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"
    )
    assert _heavy(mods) == []
    assert "torch" not in mods  # the command list needs no torch at all


@pytest.mark.parametrize("cmd", ["train", "lock", "attack", "verify"])
def test_a_commands_help_loads_only_what_it_needs(cmd):
    mods = _loaded(f"from trainlock.cli import main\ntry:\n    main(['{cmd}', '--help'])\nexcept SystemExit:\n    pass")
    assert [m for m in _heavy(mods) if not m.startswith("trainlock.optimizers.")] == []


def test_a_used_name_loads_lazily():
    mods = _loaded("import trainlock as tl\ntl.SpecDefConfig()")
    assert "trainlock.locks.specdef" in mods and _heavy(mods) == []


def test_the_check_can_fail():
    assert _heavy(_loaded("import trainlock as tl\ntl.redteam")) != []
