"""The command line and model loading from a local folder, on a tiny saved model."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_model, tiny_tokenizer

from steering import ModelLoadError, load_model
from steering.cli import main

QUESTIONS = ["what do you do at a party?", "how was your weekend?"]


@pytest.fixture
def tiny_folder(tmp_path):
    lm = tiny_model("llama")
    folder = tmp_path / "tiny-llama"
    lm.model.save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture
def questions(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text("".join(json.dumps({"question": q, "id": i}) + "\n" for i, q in enumerate(QUESTIONS)))
    return path


def test_local_folder_loads_in_each_float_precision(tiny_folder):
    for q, dtype in (("none", "torch.float32"), ("bf16", "torch.bfloat16")):
        lm = load_model(str(tiny_folder), quantization=q)
        assert lm.name == "tiny-llama" and str(lm.sites.dtype) == dtype
        assert lm.tokenizer.padding_side == "left"


def test_unreachable_hub_model_says_what_to_do_instead(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without the hub (read at import, so patch too)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError, match="local folder, a local .gguf file, or 'default'"):
        load_model("no-such-org/no-such-model", quantization="none")
    with pytest.raises(ModelLoadError, match="no GGUF file"):
        load_model("/nowhere/model.gguf")
    with pytest.raises(ValueError, match="unknown quantization"):
        load_model("default", quantization="fp8")


def test_identify_then_generate_npti_and_base(tiny_folder, questions, tmp_path, capsys):
    descriptions = tmp_path / "d.json"
    descriptions.write_text(json.dumps({"high": ["you love parties."], "low": ["you like quiet."]}))
    common = ["--model", str(tiny_folder), "--quantization", "none"]
    out = tmp_path / "profiles"
    assert main(["identify", *common, "--trait", "Extraversion", "--questions", str(questions), "--descriptions",
                 str(descriptions), "--out", str(out), "--max-new-tokens", "5", "--top-k", "20"]) == 0
    assert (out / "Extraversion_high.json").is_file() and (out / "Extraversion_low.json").is_file()
    assert len((out / "answers" / "Extraversion.jsonl").read_text().splitlines()) == 4
    for method in ("base", "simple", "p2", "npti"):
        answers = tmp_path / f"{method}.jsonl"
        assert main(["generate", *common, "--questions", str(questions), "--method", method, "--trait",
                     "Extraversion", "--pole", "low", "--strength", "1.2", "--profiles", str(out),
                     "--max-new-tokens", "4", "--out", str(answers)]) == 0
        rows = [json.loads(line) for line in answers.read_text().splitlines()]
        assert [r["id"] for r in rows] == [0, 1] and all(isinstance(r["answer"], str) for r in rows)
        assert rows[0]["method"] == method and rows[0]["pole"] == "low"
        if method == "p2":
            assert all(0 <= r["description"] < 24 for r in rows)
    assert rows[0]["strength"] == 1.2 and rows[0]["top_neurons"] == "all"
    assert main(["generate", *common, "--questions", str(questions), "--method", "npti", "--trait", "Extraversion",
                 "--pole", "high", "--top-neurons", "7", "--profiles", str(out), "--max-new-tokens", "3", "--out",
                 str(tmp_path / "top.jsonl")]) == 0
    assert json.loads((tmp_path / "top.jsonl").read_text().splitlines()[0])["top_neurons"] == 7


@pytest.mark.parametrize("extra, message", [
    (["--method", "sft", "--profiles", "/nowhere"], "no LoRA adapter Extraversion_high in /nowhere/adapters: train it"),
    (["--method", "npti", "--profiles", "/nowhere"], "no NPTI profile Extraversion_high.json"),
    (["--method", "npti", "--strength", "9"], "strength must be between 0 and 4"),
])
def test_generate_refuses_with_a_clear_message(tiny_folder, questions, tmp_path, capsys, extra, message):
    code = main(["generate", "--model", str(tiny_folder), "--quantization", "none", "--questions", str(questions),
                 "--trait", "Extraversion", "--pole", "high", "--out", str(tmp_path / "o.jsonl"), *extra])
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("content, message", [
    ('{"question": ""}\n', "bad.jsonl:1: the question is empty"),
    ('{"q": "hi"}\n', 'bad.jsonl:1: expected an object with a "question" field'),
    ('{"question": "ok"}\nnot json\n', "bad.jsonl:2: not JSON"),
    ('{"question": "' + "x" * 4001 + '"}\n', "limit is 4000"),
])
def test_bad_question_files(tiny_folder, tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    code = main(["generate", "--model", str(tiny_folder), "--questions", str(path), "--method", "base", "--trait",
                 "Openness", "--pole", "high", "--out", str(tmp_path / "o.jsonl")])
    assert code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [{"question": q, "high": f"{q} i love loud parties and dancing with everyone there all night " * 4,
             "low": f"{q} i like a quiet night at home with a good long book " * 4,
             "facet_high": "Gregariousness", "facet_low": "Gregariousness"} for q in QUESTIONS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_identify_from_a_corpus_then_generate_with_a_vector(tiny_folder, questions, corpus_file, tmp_path, capsys,
                                                            monkeypatch):
    from steering.build import build_vectors
    from steering.methods.corpus import read_corpus

    common = ["--model", str(tiny_folder), "--quantization", "none"]
    out = tmp_path / "profiles"
    assert main(["identify", *common, "--trait", "Extraversion", "--source", "corpus", "--corpus", str(corpus_file),
                 "--out", str(out), "--top-k", "20"]) == 0
    assert (out / "Extraversion_high.corpus.json").is_file() and "read tokens" in capsys.readouterr().out
    # a vector from the same corpus (build-vectors reads the bank's train split; here the small corpus)
    pairs = [(p.question, p.high, p.low) for p in read_corpus(corpus_file)]
    monkeypatch.setattr("steering.build._corpus_triples", lambda trait, limit: pairs)
    build_vectors(load_model(str(tiny_folder), quantization="none"), out, ["Extraversion"], batch_size=2)
    answers = tmp_path / "a.jsonl"
    assert main(["generate", *common, "--questions", str(questions), "--method", "vector", "--trait",
                 "Extraversion", "--pole", "low", "--strength", "0.2", "--layers", "1", "--profiles", str(out),
                 "--max-new-tokens", "4", "--out", str(answers)]) == 0
    row = json.loads(answers.read_text().splitlines()[0])
    assert row["method"] == "vector" and row["strength"] == 0.2 and row["layers"] == [1]
    assert main(["generate", *common, "--questions", str(questions), "--method", "npti", "--source", "corpus",
                 "--trait", "Extraversion", "--pole", "high", "--profiles", str(out), "--max-new-tokens", "4",
                 "--out", str(answers)]) == 0
    assert json.loads(answers.read_text().splitlines()[0])["source"] == "corpus"


@pytest.mark.parametrize("extra, message", [
    (["--method", "vector", "--strength", "7"], "strength must be between 0 and 4"),
    (["--method", "vector", "--layers", "99"], "layer 99 does not exist"),
    (["--method", "vector"], "no activation vector for Extraversion"),
    (["--method", "base", "--source", "corpus"], "source 'corpus' is not one of base"),
])
def test_bad_vector_input_exits_2_with_one_line_and_writes_nothing(tiny_folder, questions, corpus_file, tmp_path,
                                                                   capsys, extra, message, monkeypatch):
    from steering.build import build_vectors
    from steering.methods.corpus import read_corpus

    out = tmp_path / "profiles"
    if "--layers" in extra or "7" in extra:
        pairs = [(p.question, p.high, p.low) for p in read_corpus(corpus_file)]
        monkeypatch.setattr("steering.build._corpus_triples", lambda trait, limit: pairs)
        build_vectors(load_model(str(tiny_folder), quantization="none"), out, ["Extraversion"], batch_size=2)
    answers = tmp_path / "a.jsonl"
    code = main(["generate", "--model", str(tiny_folder), "--quantization", "none", "--questions", str(questions),
                 "--trait", "Extraversion", "--pole", "high", "--profiles", str(out), "--max-new-tokens", "3",
                 "--out", str(answers), *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "Loading weights" not in line]
    assert code == 2 and err == [f"error: {err[0][7:]}"] and message in err[0] and not answers.exists()


def test_a_vector_for_another_model_is_refused(tiny_folder, questions, tmp_path, capsys):
    from helpers import random_vector

    other = tiny_model("qwen2")
    out = tmp_path / "profiles"
    random_vector(other).save(out)
    code = main(["generate", "--model", str(tiny_folder), "--quantization", "none", "--questions", str(questions),
                 "--method", "vector", "--trait", "Extraversion", "--pole", "high", "--profiles", str(out),
                 "--out", str(tmp_path / "a.jsonl")])
    assert code == 2 and "was made for tiny-qwen2" in capsys.readouterr().err


def test_a_malformed_corpus_exits_2_naming_file_and_line(tmp_path, capsys, tiny_folder,
                                                                               corpus_file):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(corpus_file.read_text() + "{oops\n")
    code = main(["identify", "--model", str(tiny_folder), "--quantization", "none", "--trait", "Extraversion",
                 "--source", "corpus", "--corpus", str(bad), "--out", str(tmp_path / "p")])
    assert code == 2 and f"{bad}, line 3: not JSON" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
