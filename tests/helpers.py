"""Test helpers, shared by the test modules (which never import each other) and by conftest: tiny random-weight
models and a character tokenizer, random profiles, vectors and adapters, activation capture, a server on a free
port, and store records."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import numpy as np
import torch

from db import OutputIn, RoundIn

from steering import NeuronProfile
from steering.engine.models import wrap_model

VOCAB = 48


def tiny_model(kind: str, seed: int = 0, positions: int = 512):
    """A tiny random-weight model of `kind` (llama, qwen2 or gpt2) from a config, wrapped for steering."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if kind == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=positions, **common)
        model = LlamaForCausalLM(config)
    elif kind == "qwen2":
        config = Qwen2Config(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=positions, **common)
        model = Qwen2ForCausalLM(config)
    elif kind == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=positions, **common)
        model = GPT2LMHeadModel(config)
    else:
        raise ValueError(kind)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 2
    return wrap_model(model, None, f"tiny-{kind}")


CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }} {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant{% endif %}"
)


def tiny_tokenizer():
    """A character-level tokenizer over VOCAB ids with a chat template, for tiny models."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'")
    vocab = {t: i for i, t in enumerate(specials + chars)}
    assert len(vocab) <= VOCAB
    vocab.update({f"<x{i}>": i for i in range(len(vocab), VOCAB)})
    backend = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=1000,
                                         continuing_subword_prefix=""))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                                     pre_tokenizers.Split("", behavior="isolated")])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", additional_special_tokens=["<s>", "</s>"])
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok

def random_profile(lm, pole: str, n: int = 12, seed: int = 0, exclude: np.ndarray | None = None,
                   trait: str = "Extraversion") -> NeuronProfile:
    rng = np.random.default_rng(seed)
    pool = np.setdiff1d(np.arange(lm.sites.n_layers * lm.sites.width), exclude if exclude is not None else [])
    flat = rng.choice(pool, n, replace=False)
    return NeuronProfile(trait, pole, lm.identity, flat // lm.sites.width, flat % lm.sites.width,
                         rng.uniform(0.1, 0.5, n), rng.uniform(0.2, 0.8, n), rng.uniform(0.5, 2.0, n))


def pole_pair(lm, n: int = 12, seed: int = 0, trait: str = "Extraversion"):
    high = random_profile(lm, "high", n, seed, trait=trait)
    low = random_profile(lm, "low", n, seed + 1, exclude=high.layer * lm.sites.width + high.index, trait=trait)
    return high, low


def random_vector(lm, seed: int = 0, layers=(1,), trait: str = "Extraversion"):
    """A trait vector of random directions and norms for a tiny model (read-out at the last layer)."""
    from steering.methods.vector import TraitVector

    rng = np.random.default_rng(seed)
    config = lm.model.config
    n, h = lm.sites.n_layers, getattr(config, "hidden_size", None) or config.n_embd
    return TraitVector(trait, lm.identity, rng.normal(size=(n, h)), rng.uniform(1, 3, n), rng.normal(size=n),
                       readout_layer=n - 1, layers=layers)


@contextmanager
def capture(lm):
    """Record every site's input and (final, post-steering) output per call: {layer: [(input, output), ...]}.

    Registered last, so it sees what the steering hooks returned."""
    seen: dict[int, list] = {i: [] for i in range(lm.sites.n_layers)}
    handles = [m.register_forward_hook(lambda _m, inp, out, i=i: seen[i].append((inp[0].clone(), out.clone())))
               for i, m in enumerate(lm.sites.modules)]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def hook_count(lm) -> int:
    mods = list(lm.sites.modules) + [lm.sites.root]
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods)


def tokens(batch: int = 2, length: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 40, (batch, length), generator=g)


def tiny_shipped(root, adapter_pole: str | None = None):
    """A tiny chat Llama (2,048-token context, for persona prompts) and a profiles folder under `root` holding
    Extraversion NPTI profiles and, for `adapter_pole`, a random LoRA adapter: what the studio and evaluation tests
    build on. Returns (model, folder)."""
    lm = tiny_model("llama", positions=2048)
    lm.tokenizer = tiny_tokenizer()
    folder = root / "profiles" / lm.name
    high, low = pole_pair(lm, n=12)
    high.save(folder / "Extraversion_high.json")
    low.save(folder / "Extraversion_low.json")
    random_vector(lm).save(folder)
    if adapter_pole:
        random_adapter(lm, folder / "adapters" / f"Extraversion_{adapter_pole}", seed=4)
    return lm, folder


def random_adapter(lm, folder, seed: int, chats: list | None = None):
    """Save a LoRA adapter with random (nonzero) weights to `folder`; return the in-memory peft model's logits on
    `chats` (None: nothing)."""
    import copy

    from peft import get_peft_model

    from steering.engine.generation import encode_chats
    from steering.methods.finetune import Training, lora_config

    model = get_peft_model(copy.deepcopy(lm.model), lora_config(Training(rank=4, targets=None), lm.identity.n_layers))
    torch.manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.data.normal_(0, 0.5)
    model.eval()
    model.save_pretrained(folder)
    if chats is None:
        return None
    with torch.no_grad():
        return model(**encode_chats(lm, chats)).logits


@contextmanager
def serve(app):
    """Serve a FastAPI app with uvicorn on a free port of 127.0.0.1 in a thread; yield its base URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def post(url: str, body: dict) -> tuple[int, dict]:
    """POST JSON; (status, parsed reply), for refusals too."""
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def quick_round(rater_id: str | None, methods: tuple[str, str] = ("npti", "base"), **change) -> RoundIn:
    """A quick round: methods[0] at slot 0 (A), methods[1] at slot 1 (B)."""
    outputs = [OutputIn(slot=i, method=m, params={"strength": 2.0}, seed=7, text=f"Shown answer {i}.", n_tokens=9,
                        latency=0.25, raw_text=f"Shown answer {i}. And an unfinished")
               for i, m in enumerate(methods)]
    return dataclasses.replace(
        RoundIn(kind="blind", question="What do you do at a party?", custom=True, trait="Extraversion", pole="low",
                model="tiny-test", seconds=1.5, outputs=outputs, rater_id=rater_id, mode="quick"), **change)


def all_scores(n: int = 5, trait: int = 4, fluency: int = 3) -> dict[int, tuple[int, int]]:
    return {slot: (trait, fluency) for slot in range(n)}


def run_together(n: int, work) -> list[object]:
    """Run work(i) in n threads released at the same moment; return each result or the exception it raised."""
    barrier = threading.Barrier(n)
    results: list[object] = [None] * n

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as err:  # noqa: BLE001 - the test inspects what each thread got
            results[i] = err

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    return results


@contextmanager
def page_says(page, *ids: str, stacks: bool = False):
    """On a failed check inside the block, add what the page's own lines said (its warnings, its counts), the
    browser console's errors and warnings and the toasts Gradio showed to the failure, and with `stacks` where every
    thread of this process stood (for a server served in-process): a check that failed once in a combined run could
    not say why."""
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"[:300]) if m.type in ("error", "warning")
            else None)
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"[:300]))
    traffic: list[str] = []
    page.on("request", lambda r: traffic.append(f"{time.monotonic():.2f} > {r.method} {r.url}"[:200]))
    page.on("response", lambda r: traffic.append(f"{time.monotonic():.2f} < {r.status} {r.url}"[:200]))
    page.on("requestfailed", lambda r: traffic.append(f"{time.monotonic():.2f} ! {r.failure} {r.url}"[:200]))
    try:
        yield
    except AssertionError as exc:
        said = {}
        for name in ids:
            try:
                said[name] = page.locator(f"#{name}").inner_text(timeout=1000)
            except Exception as why:  # noqa: BLE001 - the element itself may be what is missing
                said[name] = f"<unreadable: {type(why).__name__}>"
        try:
            toasts = page.locator(".toast-body").all_inner_texts()
        except Exception as why:  # noqa: BLE001
            toasts = [f"<unreadable: {type(why).__name__}>"]
        where = ""
        if stacks:
            where = "\nrequests since the block began:\n" + "\n".join(traffic[-30:]) + "\n" + thread_stacks()
        raise AssertionError(f"{exc}\nthe page said: {said}\ntoasts: {toasts}\nconsole: {console[-10:]}{where}") \
            from exc


def thread_stacks() -> str:
    """Every thread of this process with the innermost frames of its stack (to see what a server waits on)."""
    import sys
    import traceback

    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        lines = "".join(traceback.format_stack(frame, limit=12))
        out.append(f"--- thread {names.get(ident, ident)}\n{lines}")
    return "\n".join(out)
