"""Where a model's MLP neurons are: one activation module per layer, found by the model's structure.

A neuron is one channel of the MLP's hidden activation. In a gated MLP,
`down_proj(act_fn(gate_proj(x)) * up_proj(x))`, it is channel j of `act_fn(gate_proj(x))`, so the site of layer i
is `...layers[i].mlp.act_fn` (Llama, Qwen2, Mistral, Gemma, SmolLM). In a GPT-2 MLP, `c_proj(act(c_fc(x)))`, it is
the output of `mlp.act`. Anything else needs an explicit module template such as "model.layers.{}.mlp.act_fn".
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import torch
from torch import nn

# (template, predicate on the layer's mlp) in the order they are tried
_KNOWN_SITES: tuple[tuple[str, str], ...] = (
    ("model.layers.{}.mlp.act_fn", "gated"),
    ("transformer.h.{}.mlp.act", "gpt2"),
)


@dataclass(frozen=True)
class ModelIdentity:
    """What a neuron profile must match: the model's name (informative), its layer count and MLP width (checked),
    and a fingerprint of its architecture (checked where both sides have one).

    The fingerprint hashes the architecture, not the weights, on purpose: the same model loaded in nf4 or bf16, or
    from the GGUF file versus the hub, addresses the same neurons by (layer, index)."""

    name: str
    n_layers: int
    width: int
    fingerprint: str | None = None

    def describe(self) -> str:
        fp = f", fingerprint {self.fingerprint}" if self.fingerprint else ""
        return f"{self.name} ({self.n_layers} layers x {self.width} MLP neurons{fp})"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelIdentity":
        return cls(str(data["name"]), int(data["n_layers"]), int(data["width"]), data.get("fingerprint"))


@dataclass(frozen=True)
class NeuronSites:
    """The activation module of every layer, in layer order, and the number of neurons each outputs."""

    modules: tuple[nn.Module, ...]
    width: int
    template: str
    root: nn.Module  # the transformers model whose forward a generate step calls
    dtype: torch.dtype = torch.float32  # what the activations are computed in (bf16 under nf4)


    @property
    def n_layers(self) -> int:
        return len(self.modules)


def _unwrap(model: nn.Module) -> nn.Module:
    """A peft wrapper holds the transformers model inside; neurons are addressed on that."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _layer_modules(model: nn.Module, template: str) -> list[nn.Module]:
    prefix, _, suffix = template.partition("{}")
    if not _:
        raise ValueError(f"module template {template!r} must contain '{{}}' where the layer number goes")
    try:
        layers = model.get_submodule(prefix.rstrip("."))
    except AttributeError as exc:
        raise ValueError(f"module template {template!r}: the model has no {prefix.rstrip('.')!r}") from exc
    if not isinstance(layers, (nn.ModuleList, nn.Sequential)):
        raise ValueError(f"module template {template!r}: {prefix.rstrip('.')!r} is not a list of layers")
    modules = []
    for i in range(len(layers)):
        path = template.format(i)
        try:
            modules.append(model.get_submodule(path))
        except AttributeError as exc:
            raise ValueError(f"module template {template!r}: the model has no {path!r}") from exc
    return modules


def _matches(model: nn.Module, template: str, kind: str) -> bool:
    try:
        mlp = model.get_submodule(template.format(0).rsplit(".", 1)[0])
        model.get_submodule(template.format(0))
    except AttributeError:
        return False
    if kind == "gated":
        return all(hasattr(mlp, name) for name in ("gate_proj", "up_proj", "down_proj"))
    return hasattr(mlp, "c_fc") and hasattr(mlp, "c_proj")


@torch.no_grad()
def _probe(model: nn.Module, modules: list[nn.Module], template: str) -> tuple[int, torch.dtype]:
    """Run one token through the model and read the activation width (they must agree) and dtype of every site."""
    widths: dict[int, int] = {}
    dtypes: set[torch.dtype] = set()

    def seen(layer: int, out: torch.Tensor) -> None:
        widths[layer] = out.shape[-1]
        dtypes.add(out.dtype)

    handles = [m.register_forward_hook(lambda _m, _i, out, layer=i: seen(layer, out)) for i, m in enumerate(modules)]
    try:
        device = next(model.parameters()).device
        model(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
    finally:
        for h in handles:
            h.remove()
    if len(widths) != len(modules):
        raise ValueError(f"module template {template!r}: not every layer's module ran during a forward pass")
    if len(set(widths.values())) != 1:
        raise ValueError(f"module template {template!r}: layers have different widths {sorted(set(widths.values()))}")
    return widths[0], dtypes.pop()


def find_neuron_sites(model: nn.Module, template: str | None = None) -> NeuronSites:
    """Find the per-layer activation modules of `model`.

    With no template, gated MLPs (`model.layers.{}.mlp.act_fn`) and GPT-2 MLPs (`transformer.h.{}.mlp.act`) are
    recognised; any other architecture gets a ValueError that says what to pass instead."""
    inner = _unwrap(model)
    if template is None:
        for candidate, kind in _KNOWN_SITES:
            if _matches(inner, candidate, kind):
                template = candidate
                break
        else:
            arch = type(inner).__name__
            raise ValueError(
                f"cannot find the MLP neurons of {arch}: it is neither a gated MLP with mlp.act_fn "
                "(Llama, Qwen2, Mistral, Gemma) nor a GPT-2 MLP. Pass the activation module's path with the layer "
                "number as {}, e.g. neuron_module='model.layers.{}.mlp.act_fn' (CLI: --neuron-module)."
            )
    modules = _layer_modules(inner, template)
    if len({id(m) for m in modules}) != len(modules):
        raise ValueError(
            f"module template {template!r}: layers share one activation module object, so a hook on it cannot "
            "tell layers apart; pass a template naming a per-layer module"
        )
    width, dtype = _probe(model, modules, template)
    return NeuronSites(tuple(modules), width, template, inner, dtype)


def model_identity(model: nn.Module, name: str, sites: NeuronSites) -> ModelIdentity:
    config = getattr(_unwrap(model), "config", None)
    facts = {
        "model_type": getattr(config, "model_type", type(model).__name__),
        "n_layers": sites.n_layers,
        "width": sites.width,
        "hidden_size": getattr(config, "hidden_size", getattr(config, "n_embd", None)),
        "vocab_size": getattr(config, "vocab_size", None),
        "site": sites.template,
    }
    digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]
    return ModelIdentity(name=name, n_layers=sites.n_layers, width=sites.width, fingerprint=digest)


def residual_modules(sites: NeuronSites) -> list[nn.Module]:
    """The decoder layers that hold the neuron sites, in order: their outputs are the residual stream after each
    layer (where activation vectors are read and added)."""
    prefix = sites.template.partition("{}")[0].rstrip(".")
    layers = sites.root.get_submodule(prefix)
    if len(layers) != sites.n_layers:
        raise ValueError(f"{prefix!r} holds {len(layers)} layers but the model has {sites.n_layers} neuron sites")
    return list(layers)
