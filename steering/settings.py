"""Where Persona Studio keeps its data: one setting, overridable by an environment variable (tests point it at a
temporary folder)."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "PERSONA_STUDIO_HOME"


def data_home() -> Path:
    """The data home: `$PERSONA_STUDIO_HOME`, else `$XDG_CACHE_HOME/persona-studio`, else `~/.cache/persona-studio`.

    Converted models live under `models/`; nothing is written here until something needs caching."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "persona-studio"


def repo_root() -> Path:
    """The checkout (or installed tree) that holds `profiles/`."""
    return Path(__file__).resolve().parent.parent
