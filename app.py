"""Persona Studio's entry point (the Hugging Face Space's app_file): build the app from settings and serve it.

Settings are environment variables:
  PERSONA_STUDIO_MODEL          'default' (the embedded SmolLM2-135M-Instruct), a hub id, a folder or a .gguf file
  PERSONA_STUDIO_QUANTIZATION   nf4, int8, bf16 or none (default: nf4 on a CUDA device, bf16 on a CPU, where
                                bitsandbytes' 4-bit kernels are slower unless the CPU has AVX512-BF16)
  PERSONA_STUDIO_DEVICE         auto (default), cpu or cuda
  PERSONA_STUDIO_DB             any SQLAlchemy URL (default: SQLite at $PERSONA_STUDIO_HOME/studio.sqlite)
  PERSONA_STUDIO_HOME           the data folder (default ~/.cache/persona-studio)
  PERSONA_STUDIO_HOST / _PORT   where to listen (default 127.0.0.1:7860; 0.0.0.0 on a Hugging Face Space); where
                                unset, PORT and then Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured
  PERSONA_STUDIO_MAX_NEW_TOKENS tokens per answer (default 96, at most 4096)
  PERSONA_STUDIO_SAMPLING       1 (default): sample (temperature 0.7, top-p 0.9), so a new seed gives new answers;
                                0: greedy (true/false, yes/no and on/off work too)
  PERSONA_STUDIO_ADMIN_TOKEN    when set, the CSV exports and judge runs need it (a Space secret)
  PERSONA_STUDIO_LIMIT_*        the studio's limits (studio/limits.py; README's settings table)
  PERSONA_STUDIO_SPACE_DATA     on a Hugging Face Space (SPACE_ID set), the persistent storage folder (default /data):
                                where it exists and is writable, the data home defaults to <it>/persona-studio

A bad setting is one line on stderr naming the variable, and exit status 2, before any model loads: the settings
are read and checked first, then the database is opened, and only then is the model loaded.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass


def _zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


GPU_SECONDS = 60  # ZeroGPU's per-call budget: a six-method round of 96 tokens takes ~13 s on a 2-core CPU (see
# bench/compare_ttft.py), a few seconds on a GPU slice; the offline judge's pass over the rated answers is longer


def _on_zero_gpu():
    """spaces.GPU on a ZeroGPU Space, where it asks for a GPU per call; the identity everywhere else. Called
    before anything imports torch: the spaces package must come first."""
    if _zero_gpu():
        import spaces

        return spaces.GPU(duration=GPU_SECONDS)
    return lambda fn: fn


DEVICES = ("auto", "cpu", "cuda")
QUANTIZATIONS = ("nf4", "int8", "bf16", "none")  # steering.engine.models.QUANTIZATIONS, without importing torch yet
MAX_TOKENS = 4096


def _first(env: Mapping[str, str], names: tuple[str, ...]) -> tuple[str, str] | None:
    """(name, value) of the first of `names` set to something other than blanks, or None."""
    for name in names:
        if env.get(name, "").strip():
            return name, env[name].strip()
    return None


def _whole(env: Mapping[str, str], names: tuple[str, ...], default: int, low: int, high: int) -> int:
    found = _first(env, names)
    if found is None:
        return default
    name, text = found
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}={text!r}: expected a whole number from {low} to {high}") from None
    if not low <= value <= high:
        raise ValueError(f"{name}={value}: expected a whole number from {low} to {high}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str | None, allowed: tuple[str, ...]) -> str | None:
    text = env.get(name, "").strip()
    if not text:
        return default
    if text.lower() not in allowed:
        raise ValueError(f"{name}={text!r}: choose one of {', '.join(allowed)}")
    return text.lower()


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(f"{name}={text!r}: expected 1 or 0 (true/false, yes/no)")
    return text in ("1", "true", "yes", "on")


def check_database(url: str) -> None:
    """Refuse, before anything is loaded, a PERSONA_STUDIO_DB that is not a SQLAlchemy URL, names no dialect
    SQLAlchemy knows, or whose driver is not installed (PostgreSQL without psycopg2, say). The URL is shown with
    its password hidden, and not at all where it does not parse (it may hold a password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError("PERSONA_STUDIO_DB is not a SQLAlchemy URL (expected, e.g., sqlite:////data/studio.sqlite "
                         "or postgresql+psycopg://user:password@host/db)") from None
    shown = parsed.render_as_string(hide_password=True)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise ValueError(f"PERSONA_STUDIO_DB={shown}: SQLAlchemy has no dialect {parsed.drivername!r}") from None
    except ImportError as exc:
        raise ValueError(f"PERSONA_STUDIO_DB={shown}: its driver is not installed ({exc}); install it, or name a "
                         "driver you have in the URL (dialect+driver://...)") from None


@dataclass(frozen=True)
class Settings:
    model: str = "default"
    quantization: str | None = None  # None: nf4 on CUDA, bf16 on CPU
    device: str = "auto"
    database: str | None = None
    host: str = "127.0.0.1"
    port: int = 7860
    max_new_tokens: int = 96
    sampling: bool = True
    home: str | None = None  # the data home to use where PERSONA_STUDIO_HOME is unset (a Space's storage)
    notice: str | None = None  # a line every page shows (ratings on a Space's temporary disk)
    admin_token: str | None = None
    limits: object = None  # studio.limits.Limits

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> "Settings":
        """Settings from the environment, each checked here: a bad one raises ValueError naming the variable.
        Where to listen: PERSONA_STUDIO_HOST, else GRADIO_SERVER_NAME; PERSONA_STUDIO_PORT, else PORT, else
        GRADIO_SERVER_PORT."""
        on_space = "SPACE_ID" in env
        database = env.get("PERSONA_STUDIO_DB", "").strip() or None
        if database:
            check_database(database)
        host = _first(env, ("PERSONA_STUDIO_HOST", "GRADIO_SERVER_NAME"))
        from studio.limits import Limits  # no torch: the limits are checked before anything loads

        home, notice = space_storage(env)
        return cls(model=env.get("PERSONA_STUDIO_MODEL", "").strip() or "default",
                   quantization=_choice(env, "PERSONA_STUDIO_QUANTIZATION", None, QUANTIZATIONS),
                   device=_choice(env, "PERSONA_STUDIO_DEVICE", "auto", DEVICES),
                   database=database,
                   host=host[1] if host else "0.0.0.0" if on_space else "127.0.0.1",
                   port=_whole(env, ("PERSONA_STUDIO_PORT", "PORT", "GRADIO_SERVER_PORT"), 7860, 1, 65535),
                   max_new_tokens=_whole(env, ("PERSONA_STUDIO_MAX_NEW_TOKENS",), 96, 1, MAX_TOKENS),
                   sampling=_flag(env, "PERSONA_STUDIO_SAMPLING", True),
                   home=home, notice=notice, admin_token=env.get("PERSONA_STUDIO_ADMIN_TOKEN") or None,
                   limits=Limits.from_env(env))


TEMPORARY_DISK = ("ratings are kept on this Space's temporary disk and are lost at restart — attach storage or set "
                  "PERSONA_STUDIO_DB")


def space_storage(env: Mapping[str, str]) -> tuple[str | None, str | None]:
    """On a Space (SPACE_ID set) with neither PERSONA_STUDIO_HOME nor PERSONA_STUDIO_DB: (the data home under its
    persistent storage, None) where that folder exists and is writable, else (None, the temporary-disk notice).
    Elsewhere (None, None): the owner chose where the data goes."""
    if "SPACE_ID" not in env or env.get("PERSONA_STUDIO_HOME") or env.get("PERSONA_STUDIO_DB"):
        return None, None
    storage = env.get("PERSONA_STUDIO_SPACE_DATA", "/data")
    if os.path.isdir(storage) and os.access(storage, os.W_OK | os.X_OK):
        return os.path.join(storage, "persona-studio"), None
    return None, TEMPORARY_DISK


def open_store(settings: Settings):
    """The ratings store, opened (and migrated) before any model loads, so a database that cannot be opened costs
    one line naming PERSONA_STUDIO_DB rather than a traceback after the model is loaded."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    from db import SchemaTooNew, Store, StoreBusy
    from db.store import default_url

    if settings.database:  # checked in Settings.from_env; a Settings made by hand fails in Store, caught below
        where = f"PERSONA_STUDIO_DB={make_url(settings.database).render_as_string(hide_password=True)}"
    else:
        where = f"the default database {default_url()} (PERSONA_STUDIO_DB unset; it lives under PERSONA_STUDIO_HOME)"
    try:
        return Store(settings.database)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise ValueError(f"{where}: {exc}") from None
    except (SQLAlchemyError, OSError, SchemaTooNew, StoreBusy) as exc:
        reason = (getattr(exc, "orig", None) or getattr(exc.__cause__, "orig", None) or getattr(exc, "strerror", None)
                  or exc)
        raise ValueError(f"{where}: cannot open the database ({' '.join(str(reason).split())})") from None


def prepare(settings: Settings):
    """Where the data goes, said once at start, and the store opened there."""
    if settings.home:  # a Space's persistent storage; read by the store and the engine at call time
        os.environ.setdefault("PERSONA_STUDIO_HOME", settings.home)
    if settings.notice:
        print(f"note: {settings.notice}", file=sys.stderr, flush=True)
    return open_store(settings)


def build(settings: Settings, gpu=None):
    """The Studio (the pages' and the API's one object) on an open store and a loaded model (in that order)."""
    store = prepare(settings)
    from steering import load_model
    from steering.engine.generation import Decoding
    from steering.engine.models import ModelLoadError
    from studio.core import Studio

    try:
        lm = load_model(settings.model, quantization=settings.quantization, device=settings.device)
    except ModelLoadError as exc:  # a ValueError here, so main need not import torch before spaces to catch it
        store.close()
        raise ValueError(f"PERSONA_STUDIO_MODEL={settings.model}: {exc}") from exc
    print(f"model {lm.identity.describe()} ({lm.quantization}); ratings go to {store.url}", flush=True)
    return Studio(lm, store, Decoding(max_new_tokens=settings.max_new_tokens, do_sample=settings.sampling),
                  gpu=gpu or (lambda fn: fn), step_progress=not _zero_gpu(), limits=settings.limits,
                  admin_token=settings.admin_token, notice=settings.notice)


def main() -> int:
    gpu = _on_zero_gpu()  # before torch is imported
    try:
        settings = Settings.from_env()
        studio = build(settings, gpu)
    except ValueError as exc:  # a bad setting, a database that cannot be opened, a model that cannot be loaded
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    from studio.server import launch

    print(f"Persona Studio on http://{settings.host}:{settings.port}/", flush=True)
    launch(studio, settings.host, settings.port)  # Gradio's own serving path; blocks until stopped
    return 0


if __name__ == "__main__":
    sys.exit(main())
