"""Plugins: outside Python files or modules that register locks, attack stages, transforms, optimizers, tasks,
models and `tune` search spaces, so every command sees them.

    trainlock --plugin examples/plugins/noisy_top.py lock runs/base --out runs/mine --spec '{"type": "noisy-top"}'
    TRAINLOCK_PLUGINS=my_locks:other.py trainlock verify runs/mine        # several, separated by os.pathsep
    [project.entry-points."trainlock.plugins"] mine = "my_package.locks"   # an installed package: always loaded

A plugin is imported once; whatever it registers (`@register_lock("name", Config)`, `@register_stage(...)`,
`TRANSFORMS.register(...)`, ...) is recorded as coming from it (`Registry.origin`), so a saved lock names the
plugin `verify` needs. An entry point may name a module or a callable (called with no arguments).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import logging
import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .registry import loading

ENV = "TRAINLOCK_PLUGINS"
GROUP = "trainlock.plugins"
logger = logging.getLogger(__name__)
_loaded: dict[str, str] = {}  # source as given -> module name


class PluginError(ValueError):
    """A plugin that cannot be found or fails to import (the message names it)."""


def _module_name(path: Path) -> str:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    return f"trainlock_plugin_{path.stem.replace('-', '_')}_{digest}"


def load(source: str) -> str:
    """Import one plugin: a path to a .py file, or an importable module name. Returns the module name;
    loading the same source twice does nothing. Raises PluginError naming the source."""
    source = str(source).strip()
    if not source:
        raise PluginError("--plugin: empty plugin name")
    if source in _loaded:
        return _loaded[source]
    is_path = source.endswith(".py") or os.sep in source
    try:
        with loading(source):
            if is_path:
                path = Path(source).resolve()
                if not path.is_file():
                    raise PluginError(f"plugin file {source!r} does not exist")
                name = _module_name(path)
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                try:
                    spec.loader.exec_module(module)
                except BaseException:
                    sys.modules.pop(name, None)
                    raise
            else:
                name = importlib.import_module(source).__name__
    except PluginError:
        raise
    except ModuleNotFoundError as e:
        if is_path or not e.name or not source.startswith(e.name):
            raise PluginError(f"plugin {source!r} failed to import: {e}") from e
        raise PluginError(f"plugin {source!r} is neither a .py file nor an importable module") from None
    except Exception as e:
        raise PluginError(f"plugin {source!r} failed to import: {type(e).__name__}: {e}") from e
    _loaded[source] = name
    logger.debug("loaded plugin %s as %s", source, name)
    return name


def load_entry_points() -> list[str]:
    """Import every installed package's `trainlock.plugins` entry point (a module or a callable)."""
    names = []
    for ep in entry_points(group=GROUP):
        source = f"{ep.name} ({ep.value})"
        if source in _loaded:
            continue
        try:
            with loading(ep.value.split(":")[0]):
                obj = ep.load()
                if callable(obj):
                    obj()
        except Exception as e:
            raise PluginError(
                f"entry point {ep.name!r} of group {GROUP!r} ({ep.value}) failed: {type(e).__name__}: {e}"
            ) from e
        _loaded[source] = ep.value
        names.append(ep.value)
    return names


def load_all(sources: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Entry points, then TRAINLOCK_PLUGINS, then `sources` (the --plugin flags), each once."""
    env = [s for s in os.environ.get(ENV, "").split(os.pathsep) if s.strip()]
    return [*load_entry_points(), *(load(s) for s in [*env, *sources])]


def loaded() -> list[str]:
    """The sources loaded so far, in order."""
    return list(_loaded)


__all__ = ["ENV", "GROUP", "PluginError", "load", "load_all", "load_entry_points", "loaded"]
