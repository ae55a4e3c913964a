"""Persona Studio's entry point (the Hugging Face Space's app_file): build the app from settings and serve it.

Settings are environment variables:
  PERSONA_STUDIO_MODEL          'default' (the embedded SmolLM2-135M-Instruct), a hub id, a folder or a .gguf file
  PERSONA_STUDIO_QUANTIZATION   nf4, int8, bf16 or none (default: nf4 on a CUDA device, bf16 on a CPU, where
                                bitsandbytes' 4-bit kernels are slower unless the CPU has AVX512-BF16)
  PERSONA_STUDIO_DEVICE         auto (default), cpu or cuda
  PERSONA_STUDIO_DB             any SQLAlchemy URL (default: SQLite at $PERSONA_STUDIO_HOME/studio.sqlite)
  PERSONA_STUDIO_HOME           the data folder (default ~/.cache/persona-studio)
  PERSONA_STUDIO_HOST / _PORT   where to listen (default 127.0.0.1:7860; 0.0.0.0 on a Hugging Face Space)
  PERSONA_STUDIO_MAX_NEW_TOKENS tokens per answer (default 96)
  PERSONA_STUDIO_SAMPLING       1 (default): sample (temperature 0.7, top-p 0.9), so a new seed gives new answers;
                                0: greedy
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass


def _zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "true")


def _on_zero_gpu():
    """spaces.GPU on a ZeroGPU Space, where it asks for a GPU per call; the identity everywhere else. Called
    before anything imports torch: the spaces package must come first."""
    if _zero_gpu():
        import spaces

        return spaces.GPU
    return lambda fn: fn


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

    @classmethod
    def from_env(cls, env=os.environ) -> "Settings":
        on_space = "SPACE_ID" in env
        return cls(model=env.get("PERSONA_STUDIO_MODEL", "default"),
                   quantization=env.get("PERSONA_STUDIO_QUANTIZATION") or None,
                   device=env.get("PERSONA_STUDIO_DEVICE", "auto"),
                   database=env.get("PERSONA_STUDIO_DB") or None,
                   host=env.get("PERSONA_STUDIO_HOST", "0.0.0.0" if on_space else "127.0.0.1"),
                   port=int(env.get("PERSONA_STUDIO_PORT", env.get("PORT", "7860"))),
                   max_new_tokens=int(env.get("PERSONA_STUDIO_MAX_NEW_TOKENS", "96")),
                   sampling=env.get("PERSONA_STUDIO_SAMPLING", "1").lower() not in ("0", "false", "no"))


def build(settings: Settings, gpu=None):
    """The FastAPI app with the pages and the API, on a loaded model and an open store."""
    from db import Store
    from steering import load_model
    from steering.generation import Decoding
    from studio.core import Studio
    from studio.server import create_app

    lm = load_model(settings.model, quantization=settings.quantization, device=settings.device)
    store = Store(settings.database)
    print(f"model {lm.identity.describe()} ({lm.quantization}); ratings go to {store.url}", flush=True)
    gpu = gpu or (lambda fn: fn)
    studio = Studio(lm, store, Decoding(max_new_tokens=settings.max_new_tokens, do_sample=settings.sampling),
                    gpu=gpu, step_progress=not _zero_gpu())
    return create_app(studio)


def main() -> int:
    import uvicorn

    from steering.models import ModelLoadError

    gpu = _on_zero_gpu()  # before torch is imported
    try:
        settings = Settings.from_env()
        app = build(settings, gpu)
    except (ModelLoadError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Persona Studio on http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
