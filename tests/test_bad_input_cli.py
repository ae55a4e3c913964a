"""Bad input gets one clear line and loses nothing: every command refuses bad input with exit status 2 and one line
on stderr that names the option, or the file and line, with no traceback, and writes nothing (an earlier result
stays byte for byte); the app refuses a bad setting the same way, naming the variable, before any model loads."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import tiny_model, tiny_tokenizer

from steering.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["what do you do at a party?", "how was your weekend?"]
# progress bars of tqdm / transformers: known noise, not an error line
NOISE = re.compile(r"\d+%\||it/s\]|s/it\]|\?it/s")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip() and not NOISE.search(line)]


def snapshot(*folders: Path) -> dict[str, bytes]:
    """Every file under `folders` (but the data home, where a model may be cached), with its bytes."""
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "home" not in path.relative_to(folder).parts[:1]:
                out[str(path)] = path.read_bytes()
    return out


def _lines(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """The inputs every case draws on: a tiny saved model and broken copies of it, question files good and bad,
    description files, a plain file and a folder to put where the other is expected."""
    root = tmp_path_factory.mktemp("inputs")
    model = root / "tiny-llama"
    tiny_model("llama").model.save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    trunc = root / "truncated"
    trunc.mkdir()
    for f in model.iterdir():
        data = f.read_bytes()
        (trunc / f.name).write_bytes(data[: len(data) // 3] if f.suffix == ".safetensors" else data)
    for name, keep in (("no-weights", lambda f: f.suffix != ".safetensors"),
                       ("no-tokenizer", lambda f: "token" not in f.name)):
        (root / name).mkdir()
        for f in filter(keep, model.iterdir()):
            (root / name / f.name).write_bytes(f.read_bytes())
    (root / "empty-model").mkdir()
    (root / "a-folder").mkdir()
    (root / "empty.gguf").write_bytes(b"")
    (root / "garbage.gguf").write_bytes(bytes(range(256)) * 8)
    (root / "a-file").write_text("not a folder\n")
    texts = {
        "q": _lines(*({"question": q, "id": i} for i, q in enumerate(QUESTIONS))),
        "q_number": _lines({"question": 42}),
        "q_null": _lines({"question": "fine?"}, {"question": None}),
        "q_list": _lines({"question": "fine?"}, '["a list?"]'),
        "q_string": _lines('"just a string"'),
        "q_bad_json": _lines({"question": "fine?"}, "{oops"),
        "q_empty": "\n\n",
        "q_trait_number": _lines({"question": "fine?", "trait": "Openness"}, {"question": "ok?", "trait": 3}),
        "q_trait_unknown": _lines({"question": "fine?", "trait": "Charisma"}),
        "q_extraversion": _lines({"question": "fine?", "trait": "Extraversion"}),
        "d": json.dumps({"high": ["You love parties."], "low": ["You like quiet."]}),
        "d_null": json.dumps({"high": ["You love parties."], "low": ["You like quiet.", None]}),
        "d_not_json": "{\n  'high': []\n}\n",
        "d_list": json.dumps(["You love parties."]),
    }
    for name, text in texts.items():
        (root / f"{name}.json{'l' if name.startswith('q') else ''}").write_text(text)
    (root / "q_utf8.jsonl").write_bytes(_lines({"question": "fine?"}).encode() + b'{"question": "caf\xe9?"}\n')
    out = {name: str(root / f"{name}.json{'l' if name.startswith('q') else ''}") for name in texts}
    out.update(root=str(root), model=str(model), trunc=str(trunc), empty_model=str(root / "empty-model"),
               no_weights=str(root / "no-weights"), no_tokenizer=str(root / "no-tokenizer"),
               folder=str(root / "a-folder"), file=str(root / "a-file"), empty_gguf=str(root / "empty.gguf"),
               garbage_gguf=str(root / "garbage.gguf"), q_utf8=str(root / "q_utf8.jsonl"))
    return out


GEN = ["generate", "--model", "{model}", "--quantization", "none", "--method", "base", "--trait", "Openness",
       "--pole", "high", "--max-new-tokens", "3"]
GEN_Q = GEN + ["--questions", "{q}"]
GEN_QO = GEN_Q + ["--out", "{out}/a.jsonl"]
IDENT = ["identify", "--model", "{model}", "--quantization", "none", "--trait", "Extraversion", "--max-new-tokens", "3",
         "--top-k", "5"]
IDENT_Q = IDENT + ["--questions", "{q}", "--out", "{out}/profiles"]
EVAL = ["evaluate", "--model", "{model}", "--quantization", "none", "--methods", "base", "--max-new-tokens", "3"]

# (case, argv, the fragment the one error line must contain, an earlier result to keep: None or a file under {out})
CASES = [
    ("questions is a folder", GEN + ["--questions", "{folder}", "--out", "{out}/a.jsonl"],
     "argument --questions: {folder} is a folder", None),
    ("questions missing", GEN + ["--questions", "{root}/nope.jsonl", "--out", "{out}/a.jsonl"],
     "argument --questions: no such file", None),
    ("out under a file", GEN_Q + ["--out", "{file}/a.jsonl"], "argument --out: {file} is a file", None),
    ("out is a folder", GEN_Q + ["--out", "{folder}"], "argument --out: {folder} is a folder", None),
    ("out in a folder that cannot be created", GEN_Q + ["--out", "{file}/deeper/still/a.jsonl"],
     "argument --out: {file} is a file, so {file}/deeper/still cannot be a folder", None),
    ("batch size negative", GEN_QO + ["--batch-size", "-1"], "argument --batch-size: must be at least 1", None),
    ("batch size zero", GEN_QO + ["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0", None),
    ("batch size not a number", GEN_QO + ["--batch-size", "8x"], "argument --batch-size: expected a whole number",
     None),
    ("seed 2**70", GEN_QO + ["--seed", str(2**70)], "argument --seed: seeds must be 0 <= seed < 2**31", None),
    ("seed negative", GEN_QO + ["--seed", "-1"], "argument --seed: seeds must be 0 <= seed < 2**31", None),
    ("max new tokens zero", GEN_QO + ["--max-new-tokens", "0"], "argument --max-new-tokens: must be at least 1",
     None),
    ("strength not finite", GEN_QO + ["--strength", "nan"], "argument --strength: expected a finite number", None),
    ("strength out of range", GEN_QO + ["--strength", "9"], "argument --strength: strength must be between 0 and 4",
     None),
    ("unknown trait", [*GEN_QO[:8], "Charisma", *GEN_QO[9:]], "argument --trait: unknown trait 'Charisma'", None),
    ("unknown method", ["generate", "--method", "telepathy", "--questions", "{q}", "--trait", "Openness", "--pole",
                        "high", "--out", "{out}/a.jsonl"], "argument --method: invalid choice: 'telepathy'", None),
    ("conflicting duplicate option", GEN_QO + ["--pole", "low"], "argument --pole: given twice, as 'high' and 'low'",
     None),
    ("layers negative", GEN_QO + ["--layers", "1", "-1"], "argument --layers: must be at least 0", None),
    ("top neurons negative", GEN_QO + ["--top-neurons", "-3"], "argument --top-neurons: must be at least 0", None),
    ("profiles is a file", GEN_QO + ["--profiles", "{file}"], "argument --profiles: {file} is a file", None),
    ("question is a number", GEN + ["--questions", "{q_number}", "--out", "{out}/a.jsonl"],
     '{q_number}:1: "question" must be a string, got a number', None),
    ("question is null", GEN + ["--questions", "{q_null}", "--out", "{out}/a.jsonl"],
     '{q_null}:2: "question" must be a string, got null', None),
    ("a line that is a list", GEN + ["--questions", "{q_list}", "--out", "{out}/a.jsonl"],
     '{q_list}:2: expected an object with a "question" field, got a list', None),
    ("JSON that is not an object", GEN + ["--questions", "{q_string}", "--out", "{out}/a.jsonl"],
     "{q_string}:1: expected an object", None),
    ("a line that is not JSON", GEN + ["--questions", "{q_bad_json}", "--out", "{out}/a.jsonl"],
     "{q_bad_json}:2: not JSON", None),
    ("invalid UTF-8", GEN + ["--questions", "{q_utf8}", "--out", "{out}/a.jsonl"], "{q_utf8}:2: not UTF-8 text",
     None),
    ("questions file empty", GEN + ["--questions", "{q_empty}", "--out", "{out}/a.jsonl"],
     "{q_empty}: no questions", None),
    ("empty model folder", [*GEN_QO[:2], "{empty_model}", *GEN_QO[3:]], "no model files in {empty_model}", None),
    ("truncated weights", [*GEN_QO[:2], "{trunc}", *GEN_QO[3:]], "could not load the model in {trunc}", None),
    ("model folder without weights", [*GEN_QO[:2], "{no_weights}", *GEN_QO[3:]],
     "could not load the model in {no_weights}: OSError: ", None),
    ("model folder without a tokenizer", [*GEN_QO[:2], "{no_tokenizer}", *GEN_QO[3:]],
     "no tokenizer files in {no_tokenizer}", None),
    ("empty gguf", [*GEN_QO[:2], "{empty_gguf}", *GEN_QO[3:]], "{empty_gguf}: not a GGUF model", None),
    ("garbage gguf", [*GEN_QO[:2], "{garbage_gguf}", *GEN_QO[3:]], "{garbage_gguf}: not a GGUF model", None),
    ("model path missing", [*GEN_QO[:2], "{root}/no/such/model", *GEN_QO[3:]],
     "no model folder or .gguf file at {root}/no/such/model", None),
    ("method source that does not exist", GEN_QO + ["--source", "corpus"], "source 'corpus' is not one of base",
     None),
    ("generate rerun keeps the earlier answers", GEN + ["--questions", "{q_null}", "--out", "{out}/a.jsonl"],
     '{q_null}:2: "question" must be a string', "a.jsonl"),
    ("identify: null among the descriptions", IDENT_Q + ["--descriptions", "{d_null}"],
     '{d_null}: "low"[1] is null; every description must be a non-empty string', None),
    ("identify: descriptions not JSON", IDENT_Q + ["--descriptions", "{d_not_json}"], "{d_not_json}:2: not JSON",
     None),
    ("identify: descriptions a list", IDENT_Q + ["--descriptions", "{d_list}"],
     '{d_list}: expected {"high": [...], "low": [...]}', None),
    ("identify: no descriptions", IDENT_Q, "--source generated needs --questions and --descriptions", None),
    ("identify: out is a file", IDENT + ["--questions", "{q}", "--descriptions", "{d}", "--out", "{file}"],
     "argument --out: {file} is a file, not a folder", None),
    ("identify: top-k zero", IDENT_Q + ["--descriptions", "{d}", "--top-k", "0"],
     "argument --top-k: must be at least 1", None),
    ("identify: min-diff out of range", IDENT_Q + ["--descriptions", "{d}", "--min-diff", "2"],
     "argument --min-diff: must be at least 0 and at most 1", None),
    ("identify: corpus missing", IDENT + ["--source", "corpus", "--corpus", "{root}/nope.jsonl", "--out", "{out}/p"],
     "argument --corpus: no such file", None),
    ("identify: a lower-case trait is fine, a bad question file is not",
     [*IDENT[:6], "extraversion", *IDENT[7:], "--questions", "{q_number}", "--descriptions", "{d}", "--out",
      "{out}/p"], '{q_number}:1: "question" must be a string', None),
    ("identify: the same option twice with different values", IDENT_Q + ["--descriptions", "{d}", "--questions",
                                                                          "{q_null}"],
     "argument --questions: given twice", None),
    ("identify rerun keeps the earlier answers", IDENT_Q + ["--descriptions", "{d_null}"], '"low"[1] is null',
     "profiles/answers/Extraversion.jsonl"),
    ("evaluate: non-string trait in a question line", EVAL + ["--questions", "{q_trait_number}", "--out", "{out}/e"],
     '{q_trait_number}:2: "trait" must be a string, got a number', None),
    ("evaluate: unknown trait in a question line", EVAL + ["--questions", "{q_trait_unknown}", "--out", "{out}/e"],
     "{q_trait_unknown}:1: \"trait\": unknown trait 'Charisma'", None),
    ("evaluate: no questions for a trait", EVAL + ["--questions", "{q_extraversion}", "--traits", "Openness",
                                                   "--out", "{out}/e"], "no questions for Openness in", None),
    ("evaluate: a method's artefacts missing", [*EVAL[:6], "npti", *EVAL[7:], "--traits", "Openness", "--questions",
                                                "{q}", "--profiles", "{root}/nope", "--out", "{out}/e"],
     "cannot evaluate as planned: no NPTI profile Openness_high.json in {root}/nope", None),
    ("evaluate: unknown method spec", EVAL + ["--methods", "base", "telepathy", "--out", "{out}/e"],
     "argument --methods: method spec 'telepathy': unknown method", None),
    ("evaluate: bad layers in a method spec", EVAL + ["--methods", "vector:0.05/x", "--out", "{out}/e"],
     "argument --methods: method spec 'vector:0.05/x'", None),
    ("evaluate: strengths out of range", EVAL + ["--strengths", "default", "5", "--out", "{out}/e"],
     "argument --strengths: strength must be between 0 and 4", None),
    ("evaluate: --traits empty", EVAL + ["--traits", "--out", "{out}/e"], "argument --traits: expected at least one",
     None),
    ("evaluate: questions per trait zero", EVAL + ["--questions-per-trait", "0", "--out", "{out}/e"],
     "argument --questions-per-trait: must be at least 1", None),
    ("evaluate: out is a file", EVAL + ["--out", "{file}"], "argument --out: {file} is a file, not a folder", None),
    ("build-vectors: limit zero", ["build-vectors", "--limit", "0", "--out", "{out}/v"],
     "argument --limit: must be at least 1", None),
    ("sweep: profiles under a file", ["sweep", "--profiles", "{file}/p", "--out", "{out}/s"],
     "argument --profiles: {file} is a file", None),
    ("finetune: learning rate zero", ["finetune", "--learning-rate", "0", "--out", "{out}/f"],
     "argument --learning-rate: must be above 0", None),
    ("finetune: answers is a folder", ["finetune", "--data", "persona", "--answers", "{folder}", "--out", "{out}/f"],
     "argument --answers: {folder} is a folder", None),
    ("fit-judge: out is a folder", ["fit-judge", "--out", "{folder}"], "argument --out: {folder} is a folder", None),
    ("judge-check: judge file missing", ["judge-check", "--judge", "{root}/nope.json"],
     "argument --judge: no such file", None),
    ("judge-check: answers is a file", ["judge-check", "--answers", "{file}"],
     "argument --answers: {file} is a file, not a folder", None),
    ("unknown command", ["identifyy", "--trait", "Openness"], "argument command: invalid choice: 'identifyy'", None),
]


def _fill(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), m.group(0)), text)


@pytest.mark.parametrize("case, argv, fragment, earlier", CASES, ids=[c[0] for c in CASES])
def test_bad_cli_input_is_one_line_exit_2_and_writes_nothing(files, tmp_path, capsys, case, argv, fragment, earlier):
    names = {**files, "out": str(tmp_path / "out")}
    if earlier:  # an earlier run's result, which the failed rerun must leave byte for byte
        path = tmp_path / "out" / earlier
        path.parent.mkdir(parents=True)
        path.write_text('{"question": "earlier?", "answer": "kept"}\n')
    before = snapshot(tmp_path, Path(files["root"]))
    code = main([_fill(a, names) for a in argv])
    err = capsys.readouterr().err
    lines = error_lines(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert _fill(fragment, names) in lines[0]
    assert snapshot(tmp_path, Path(files["root"])) == before  # nothing written, nothing truncated
    if not earlier:
        assert not (tmp_path / "out").exists()


def test_the_cases_are_distinct_and_enough():
    assert len({c[0] for c in CASES}) == len(CASES) >= 30
    assert len({(tuple(c[1]), c[3]) for c in CASES}) == len(CASES)


# -- a rerun that fails midway keeps the earlier result ------------------------------------------------------------

def _fail_on_second_call(monkeypatch, target: str, failure: BaseException) -> None:
    import importlib

    module_name, name = target.rsplit(".", 1)
    module = importlib.import_module(module_name)
    real, calls = getattr(module, name), []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise failure
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)


@pytest.mark.parametrize("failure", [ValueError("the generation broke"), KeyboardInterrupt()],
                         ids=["error", "interrupt"])
def test_a_failed_identify_rerun_keeps_the_earlier_answers_and_profiles(files, tmp_path, capsys, monkeypatch,
                                                                        failure):
    """The answers file used to be deleted before identification began: a rerun that failed midway lost it."""
    out = tmp_path / "profiles"
    argv = [_fill(a, {**files, "out": str(tmp_path)}) for a in IDENT_Q] + ["--descriptions", files["d"],
                                                                            "--batch-size", "1"]
    assert main(argv) == 0
    before = snapshot(out)
    assert len(before) == 3 and len((out / "answers" / "Extraversion.jsonl").read_text().splitlines()) == 4
    capsys.readouterr()
    _fail_on_second_call(monkeypatch, "steering.npti.identify.generate_chats", failure)
    if isinstance(failure, KeyboardInterrupt):
        with pytest.raises(KeyboardInterrupt):
            main(argv + ["--seed", "1"])
    else:
        assert main(argv + ["--seed", "1"]) == 2
        assert error_lines(capsys.readouterr().err) == ["error: the generation broke"]
    assert snapshot(out) == before  # byte for byte, and no temporary file left beside them


def test_a_failed_generate_rerun_keeps_the_earlier_answers(files, tmp_path, capsys, monkeypatch):
    argv = [_fill(a, {**files, "out": str(tmp_path)}) for a in GEN_QO] + ["--batch-size", "1"]
    assert main(argv) == 0
    before = snapshot(tmp_path)
    _fail_on_second_call(monkeypatch, "steering.methods.dispatch.answer", ValueError("the generation broke"))
    assert main(argv + ["--seed", "1"]) == 2
    assert error_lines(capsys.readouterr().err) == ["error: the generation broke"]
    assert snapshot(tmp_path) == before


def test_atomic_writer_leaves_the_earlier_file_and_no_folder_it_made(tmp_path):
    from steering.fileio import atomic_writer

    kept = tmp_path / "kept.txt"
    kept.write_text("earlier\n")
    kept.chmod(0o640)
    with pytest.raises(RuntimeError):
        with atomic_writer(kept) as f:
            f.write("half")
            raise RuntimeError("stop")
    with pytest.raises(RuntimeError):
        with atomic_writer(tmp_path / "new" / "deeper" / "x.txt") as f:
            raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.txt"] and kept.read_text() == "earlier\n"
    with atomic_writer(kept) as f:
        f.write("new\n")
    assert kept.read_text() == "new\n" and kept.stat().st_mode & 0o777 == 0o640  # the earlier file's permissions
    with atomic_writer(tmp_path / "fresh.txt") as f:
        f.write("x")
    assert (tmp_path / "fresh.txt").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


# -- the app's settings --------------------------------------------------------------------------------------------

SETTINGS_VARS = ("PERSONA_STUDIO_", "PORT", "GRADIO_SERVER_", "SPACE_ID", "SPACES_ZERO_GPU")

# (case, environment, the fragment the one error line must contain)
APP_CASES = [
    ("database not a URL", {"PERSONA_STUDIO_DB": "studio.sqlite"}, "PERSONA_STUDIO_DB is not a SQLAlchemy URL"),
    ("database under a file", {"PERSONA_STUDIO_DB": "sqlite:///{file}/x/studio.sqlite"},
     "PERSONA_STUDIO_DB=sqlite:///{file}/x/studio.sqlite: cannot open the database"),
    ("database is a folder", {"PERSONA_STUDIO_DB": "sqlite:///{folder}"},
     "PERSONA_STUDIO_DB=sqlite:///{folder}: cannot open the database"),
    ("database refused, its password hidden", {"PERSONA_STUDIO_DB": "sqlite://user:secret@/{folder}"},
     "PERSONA_STUDIO_DB=sqlite://user:***@/{folder}: "),
    ("postgresql without its driver", {"PERSONA_STUDIO_DB": "postgresql+psycopg2://user:secret@localhost/db"},
     "PERSONA_STUDIO_DB=postgresql+psycopg2://user:***@localhost/db: its driver is not installed"),
    ("unknown dialect", {"PERSONA_STUDIO_DB": "nosuchdb://host/db"}, "SQLAlchemy has no dialect 'nosuchdb'"),
    ("default database cannot be created", {"PERSONA_STUDIO_HOME": "{file}/home"},
     "the default database sqlite:///{file}/home/studio.sqlite (PERSONA_STUDIO_DB unset"),
    ("PORT not a number", {"PORT": "abc"}, "PORT='abc': expected a whole number from 1 to 65535"),
    ("port out of range", {"PERSONA_STUDIO_PORT": "70000"}, "PERSONA_STUDIO_PORT=70000: expected a whole number"),
    ("Gradio's port not a number", {"GRADIO_SERVER_PORT": "http"}, "GRADIO_SERVER_PORT='http'"),
    ("max new tokens not a number", {"PERSONA_STUDIO_MAX_NEW_TOKENS": "abc"}, "PERSONA_STUDIO_MAX_NEW_TOKENS='abc'"),
    ("max new tokens zero", {"PERSONA_STUDIO_MAX_NEW_TOKENS": "0"}, "PERSONA_STUDIO_MAX_NEW_TOKENS=0"),
    ("unknown quantization", {"PERSONA_STUDIO_QUANTIZATION": "fp8"}, "PERSONA_STUDIO_QUANTIZATION='fp8': choose"),
    ("unknown device", {"PERSONA_STUDIO_DEVICE": "tpu"}, "PERSONA_STUDIO_DEVICE='tpu': choose one of auto, cpu"),
    ("sampling neither yes nor no", {"PERSONA_STUDIO_SAMPLING": "maybe"}, "PERSONA_STUDIO_SAMPLING='maybe'"),
    ("empty model folder", {"PERSONA_STUDIO_MODEL": "{empty_model}"},
     "PERSONA_STUDIO_MODEL={empty_model}: no model files in {empty_model}"),
]


@pytest.mark.parametrize("case, env, fragment", APP_CASES, ids=[c[0] for c in APP_CASES])
def test_a_bad_app_setting_is_one_line_naming_the_variable(files, tmp_path, case, env, fragment):
    if "psycopg2" in env.get("PERSONA_STUDIO_DB", ""):
        import importlib.util

        if importlib.util.find_spec("psycopg2") is not None:
            pytest.skip("psycopg2 is installed here")
    base = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_VARS)}
    run_env = {**base, "PERSONA_STUDIO_HOME": str(tmp_path / "home"),
               **{k: _fill(v, files) for k, v in env.items()}}
    proc = subprocess.run([sys.executable, "app.py"], cwd=ROOT, env=run_env, capture_output=True, text=True,
                          timeout=120)
    lines = error_lines(proc.stderr)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert _fill(fragment, files) in lines[0]
    assert "secret" not in proc.stderr
    if case != "empty model folder":  # refused before the database is opened or created
        assert not (tmp_path / "home").exists()


@pytest.mark.parametrize("env, host, port", [
    ({}, "127.0.0.1", 7860),
    ({"SPACE_ID": "me/space"}, "0.0.0.0", 7860),
    ({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "9000"}, "0.0.0.0", 9000),
    ({"PORT": "8080", "GRADIO_SERVER_PORT": "9000"}, "127.0.0.1", 8080),
    ({"PERSONA_STUDIO_HOST": "10.0.0.1", "GRADIO_SERVER_NAME": "0.0.0.0", "PERSONA_STUDIO_PORT": "7000",
      "PORT": "8080", "GRADIO_SERVER_PORT": "9000"}, "10.0.0.1", 7000),
])
def test_where_the_app_listens(env, host, port):
    from app import Settings

    settings = Settings.from_env(env)
    assert (settings.host, settings.port) == (host, port)


def test_the_app_knows_the_engines_quantizations():
    """app.py names them itself so that a bad setting is refused before torch is imported; they must agree."""
    import app
    from steering.engine.models import QUANTIZATIONS

    assert sorted(app.QUANTIZATIONS) == sorted(QUANTIZATIONS)
