"""Code of one's own in the workflow: the plugin files a config lists, and the names they register.

A pruning method, score or model of one's own is one Python file that registers it (:func:`lpntk.register_method`,
:func:`lpntk.register_model`; docs/extending.md). The config's ``plugins`` lists such files (paths relative to the
working directory, or importable module names); :func:`load_plugins` imports each once. The workflow loads them
when it validates the config (:func:`lpntk.config.validate_config`, in the Snakefile), which also hands them to
every job through ``$LPNTK_PLUGINS`` (:data:`ENV`); :mod:`lpntk.stages` loads those on import, so that a job's
stage finds the method, score or model registered.

The schema's enums of registered names (``pruning.methods``, ``model.name``, ``kernel.mode``) list the built-in ones
(tests keep them equal to the registries); :func:`widen_enums` adds what was registered since, so that a config may
name it.
Standard library only.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from .methods import config_methods

__all__ = ["ENV", "load_plugins", "plugins_from_env", "allow_choice", "widen_enums"]

#: the environment variable that hands the loaded plugin files to the workflow's jobs (``os.pathsep``-separated)
ENV = "LPNTK_PLUGINS"
_LOADED: dict[str, ModuleType] = {}
#: schema path of an enum (``$defs`` block, then properties) -> names registered at run time
_CHOICES: dict[tuple[str, ...], list[str]] = {}
_ENUMS = {
    "pruning.methods": ("pruning", "methods", "items"),
    "model.name": ("model", "name"),
    "kernel.mode": ("kernel", "mode"),
}


def _key(entry: str) -> str:
    """A plugin's identity: the resolved path of a file, else the module name."""
    return str(Path(entry).resolve()) if entry.endswith(".py") or os.sep in entry else entry


def load_plugins(entries: Iterable[str] | None, *, export: bool = False) -> list[str]:
    """Import every plugin of ``entries`` (``.py`` files or module names) that is not loaded yet, in order; returns
    their keys (resolved paths, module names). ``export``: also record them in ``$LPNTK_PLUGINS`` for the jobs this
    process starts. A missing file raises FileNotFoundError naming it."""
    keys = []
    for entry in entries or []:
        key = _key(str(entry))
        if key not in _LOADED:
            if key.endswith(".py"):
                if not Path(key).is_file():
                    raise FileNotFoundError(f"plugin {entry}: no such file (paths are relative to {Path.cwd()})")
                name = f"lpntk_plugin_{Path(key).stem}_{len(_LOADED)}"
                spec = importlib.util.spec_from_file_location(name, key)
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
            else:
                module = importlib.import_module(key)
            _LOADED[key] = module
        keys.append(key)
    if export and keys:
        before = [e for e in os.environ.get(ENV, "").split(os.pathsep) if e]
        os.environ[ENV] = os.pathsep.join(dict.fromkeys([*before, *keys]))
    return keys


def plugins_from_env() -> list[str]:
    """Load the plugins the workflow handed to this job (``$LPNTK_PLUGINS``)."""
    return load_plugins([e for e in os.environ.get(ENV, "").split(os.pathsep) if e])


def allow_choice(where: str, name: str) -> None:
    """Let the config's ``where`` (``model.name``, ``kernel.mode``) accept ``name``, registered at run time (a model or
    kernel approximation of one's own)."""
    if where not in _ENUMS:
        raise ValueError(f"no registry behind {where!r}; known: {', '.join(_ENUMS)}")
    choices = _CHOICES.setdefault(_ENUMS[where], [])
    if name not in choices:
        choices.append(name)


def widen_enums(schema: dict) -> dict:
    """Add the names registered at run time to ``schema``'s enums of registry names (in place; returns it):
    ``pruning.methods`` every method of :data:`lpntk.methods.METHODS` that the config may name, ``model.name`` and
    ``kernel.mode`` the models and approximations registered with :func:`lpntk.models.register_model` and
    :func:`lpntk.kernel.register_mode`."""
    extra = {_ENUMS["pruning.methods"]: list(config_methods())}
    for path, names in _CHOICES.items():
        extra[path] = [*extra.get(path, []), *names]
    for (block, *props), names in extra.items():
        node = schema["$defs"][block]
        for prop in props:
            node = node["items"] if prop == "items" else node["properties"][prop]
        node["enum"] = list(dict.fromkeys([*node["enum"], *names]))
    return schema
