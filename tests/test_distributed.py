"""Identification and evaluation shared out over processes: the very commands, started by torchrun as 2 CPU
processes (gloo) on a tiny random model, write what one process writes — profiles neuron for neuron and value for
value, the same answers and judgments — and rank 0 alone writes them. Plus the World's own rules, in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from helpers import tiny_model, tiny_tokenizer

from steering.cli import main
from steering.engine.world import World, launched
from steering.npti.record import ActivationStats

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ["what do you do at a party?", "how was your weekend?", "what makes a good day?", "how do you relax?",
             "what would you do with a free afternoon?", "what do you think of surprises?", "how do you plan a trip?"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny saved model, seven questions and descriptions of both poles."""
    root = tmp_path_factory.mktemp("distributed")
    model = root / "tiny-llama"
    tiny_model("llama").model.save_pretrained(model)
    tiny_tokenizer().save_pretrained(model)
    questions = root / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    descriptions = root / "d.json"
    descriptions.write_text(json.dumps({"high": ["you love parties.", "you talk to everyone."],
                                        "low": ["you like quiet.", "you keep to yourself.", "you read alone."]}))
    return {"root": root, "model": model, "questions": questions, "descriptions": descriptions}


@contextmanager
def one_thread():
    """The reference run on one thread, as each launched process runs (torchrun sets OMP_NUM_THREADS=1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torchrun(*args: str, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N -m steering ARGS` (torchrun is torch.distributed.run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc-per-node={processes}", "-m", "steering", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def model_args(files) -> list[str]:
    return ["--model", str(files["model"]), "--quantization", "none", "--batch-size", "2"]


def test_sharded_identification_writes_the_single_process_profiles_and_answers(files):
    args = [*model_args(files), "--trait", "Extraversion", "--questions", str(files["questions"]),
            "--descriptions", str(files["descriptions"]), "--max-new-tokens", "6", "--top-k", "20", "--seed", "3"]
    one, two = files["root"] / "one", files["root"] / "two"
    with one_thread():
        assert main(["identify", *args, "--out", str(one)]) == 0
    done = torchrun("identify", *args, "--out", str(two))
    assert done.stdout.count("Extraversion_high.json") == 1  # rank 0 alone reports (and writes)
    for name in ("Extraversion_high.json", "Extraversion_low.json"):
        single, sharded = json.loads((one / name).read_text()), json.loads((two / name).read_text())
        assert sharded == single  # neuron for neuron, value for value, and the same meta (token counts included)
        assert len(single["neurons"]["layer"]) >= 20
    answers = (one / "answers" / "Extraversion.jsonl").read_text().splitlines()
    assert len(answers) == 2 * len(QUESTIONS)
    assert (two / "answers" / "Extraversion.jsonl").read_text().splitlines() == answers
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in one.rglob("*"))  # no stray files


@pytest.mark.parametrize("source", ["corpus", "generated"])
def test_sharded_build_profiles_equals_the_single_process_run(files, source):
    """build-profiles from the model reading the corpus, and from its own answers to the bank's search questions:
    the same profiles, answers and manifest (but for timings, the command and the number of processes)."""
    args = [*model_args(files), "--source", source, "--traits", "Agreeableness", "--limit", "5", "--top-k", "20",
            "--max-new-tokens", "5"]
    one, two = files["root"] / f"{source}-one", files["root"] / f"{source}-two"
    with one_thread():
        assert main(["build-profiles", *args, "--out", str(one)]) == 0
    torchrun("build-profiles", *args, "--out", str(two))
    suffix = ".corpus.json" if source == "corpus" else ".json"
    for pole in ("high", "low"):
        name = f"Agreeableness_{pole}{suffix}"
        assert json.loads((two / name).read_text()) == json.loads((one / name).read_text()), name
    if source == "generated":
        answers = (one / "answers" / "Agreeableness.jsonl").read_text()
        assert len(answers.splitlines()) == 10 and (two / "answers" / "Agreeableness.jsonl").read_text() == answers
    manifests = [json.loads((folder / "manifest.json").read_text()) for folder in (one, two)]
    if source == "corpus":
        entries = [m["traits"]["Agreeableness"]["corpus"] for m in manifests]
    else:
        entries = [{**m["traits"]["Agreeableness"], "environment": m["environment"], "command": m["command"]}
                   for m in manifests]
    assert [e["environment"]["processes"] for e in entries] == [1, 2]
    for e in entries:
        del e["seconds"], e["environment"], e["command"]
    assert entries[0] == entries[1]
    assert sorted(p.name for p in two.rglob("*")) == sorted(p.name for p in one.rglob("*"))


def test_sharded_evaluation_writes_the_single_process_answers_and_judgments(files):
    profiles = files["root"] / "one"  # the profiles the identification test wrote
    if not (profiles / "Extraversion_high.json").is_file():
        with one_thread():
            assert main(["identify", *model_args(files), "--trait", "Extraversion", "--questions",
                         str(files["questions"]), "--descriptions", str(files["descriptions"]), "--max-new-tokens",
                         "6", "--top-k", "20", "--out", str(profiles)]) == 0
    args = [*model_args(files), "--questions", str(files["questions"]), "--traits", "Extraversion", "--methods",
            "base", "simple", "npti", "--strengths", "0.5", "1", "--max-new-tokens", "5", "--sample",
            "--profiles", str(profiles), "--judge", "offline"]
    one, two = files["root"] / "eval-one", files["root"] / "eval-two"
    with one_thread():
        assert main(["evaluate", *args, "--out", str(one)]) == 0
    done = torchrun("evaluate", *args, "--out", str(two))
    assert done.stdout.count("table of") == 1
    # 2 poles x (base + simple + npti at 2 strengths) x 7 questions, in batches of 2 over 2 ranks
    for name in ("answers.jsonl", "judgments-offline-judge.jsonl"):  # line for line: rounds are gathered in order
        single = (one / name).read_text().splitlines()
        assert len(single) == 56 and (two / name).read_text().splitlines() == single, name
    for name in ("run.json", "table.csv", "pairs.csv"):
        assert (two / name).read_text() == (one / name).read_text(), name


def test_a_sharded_sweep_makes_the_single_process_choices(files):
    """The sweep's answers and judgments line for line, and the defaults it writes into the profiles, the vector
    card and the manifest, equal to one process's (but for the command and the number of processes)."""
    import shutil

    from helpers import pole_pair, random_vector

    from steering.methods.dispatch import profile_path

    lm = tiny_model("llama")
    start = files["root"] / "sweep-start"
    for profile in pole_pair(lm, n=12):
        for source in ("generated", "corpus"):
            profile.save(profile_path(start, "Extraversion", profile.pole, source))
    random_vector(lm).save(start)
    args = [*model_args(files), "--traits", "Extraversion", "--questions-per-trait", "3", "--max-new-tokens", "4",
            "--seed", "5"]
    runs = {}
    for n in (1, 2):
        profiles, out = files["root"] / f"sweep-profiles-{n}", files["root"] / f"sweep-{n}"
        shutil.copytree(start, profiles)
        if n == 1:
            with one_thread():
                assert main(["sweep", *args, "--profiles", str(profiles), "--out", str(out)]) == 0
        else:
            assert torchrun("sweep", *args, "--profiles", str(profiles), "--out", str(out)).stdout.count(
                "Extraversion: chosen") == 1  # rank 0 alone chooses
        runs[n] = profiles, out
    (one_profiles, one), (two_profiles, two) = runs[1], runs[2]
    for name in ("answers.jsonl", "judgments-offline-judge.jsonl"):
        single = (one / name).read_text().splitlines()
        # 2 poles x 12 configurations (base included) x 3 questions
        assert len(single) == 72 and (two / name).read_text().splitlines() == single, name
    for path in sorted(one_profiles.glob("*.json")):
        single, sharded = json.loads(path.read_text()), json.loads((two_profiles / path.name).read_text())
        if path.name == "manifest.json":
            settings = [m["selection_sweep"]["Extraversion"]["settings"] for m in (single, sharded)]
            assert [s.pop("processes") for s in settings] == [1, 2]
            for s in settings:
                s.pop("command"), s.pop("answers")
        assert sharded == single, path.name
    assert sorted(p.name for p in two_profiles.rglob("*")) == sorted(p.name for p in one_profiles.rglob("*"))
    # the sweep chose something, so the equal files above hold choices, not untouched copies
    assert json.loads((one_profiles / "manifest.json").read_text()).get("npti_default_source", {}).get("Extraversion")
    assert any(json.loads(path.read_text()) != json.loads((one_profiles / path.name).read_text())
               for path in start.glob("*.json"))


# A script for torchrun: identification through the library on uneven shares (7 questions in batches of 3: ranks
# get 2 and 1 batches), writing what rank 0 holds, the raw statistics' row_tokens included, as JSON.
LIBRARY_RUN = """
import json, sys
from steering import load_model
from steering.engine.world import launched
from steering.npti.identify import identify, identify_corpus

model, questions, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
with launched("cpu") as world:
    lm = load_model(model, quantization="none")
    generated = identify(lm, "Extraversion", questions, {"high": ["you love parties."], "low": ["you like quiet."]},
                         batch_size=3, world=world)
    pairs = [(q, "I would talk to everyone there" + " and more" * i + ".", "I would stay home" + " and read" * i + ".")
             for i, q in enumerate(questions)]  # answers of different lengths: rows tell their batches apart
    read = identify_corpus(lm, "Extraversion", pairs, batch_size=3, world=world)
    if world.writer:
        json.dump({name: {"rows": {p: r.stats[p].row_tokens for p in ("high", "low")},
                          "tokens": {p: r.stats[p].n_tokens for p in ("high", "low")},
                          "fire": {p: r.stats[p].fire.tolist() for p in ("high", "low")},
                          "answers": [a["answer"] for a in r.answers]}
                   for name, r in (("generated", generated), ("read", read))}, open(out, "w"))
"""


def test_uneven_shares_give_one_process_statistics_row_for_row(files):
    script, out = files["root"] / "library_run.py", files["root"] / "library.json"
    script.write_text(LIBRARY_RUN)
    torchrun_script = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                       str(script), str(files["model"]), json.dumps(QUESTIONS), str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(torchrun_script, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(files["model"]), json.dumps(QUESTIONS),
                             str(files["root"] / "library-one.json")], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    sharded, alone = json.loads(out.read_text()), json.loads((files["root"] / "library-one.json").read_text())
    assert len(alone["generated"]["rows"]["high"]) == len(alone["read"]["rows"]["low"]) == len(QUESTIONS)
    assert len(set(alone["read"]["rows"]["high"])) == len(QUESTIONS)
    assert sharded == alone


def test_a_command_that_runs_in_one_process_refuses_a_launcher(files):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                           "-m", "steering", "generate", *model_args(files), "--questions", str(files["questions"]),
                           "--method", "base", "--trait", "Extraversion", "--pole", "high",
                           "--out", str(files["root"] / "gen.jsonl")],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "error: generate runs in one process: start it without a launcher" in done.stderr
    assert not (files["root"] / "gen.jsonl").exists()


# -- the World in one process -----------------------------------------------------------------------------------

def test_one_process_is_a_world_of_one_that_calls_nothing_of_torch_distributed(monkeypatch):
    import torch.distributed as dist

    with launched("cpu", env={}) as world:
        assert world == World() and world.writer
    for name in ("all_reduce", "all_gather_object", "init_process_group"):
        monkeypatch.setattr(dist, name, lambda *a, **k: pytest.fail(f"{name} called"))
    stats = ActivationStats(2, 3)
    stats.add_values(torch.tensor([[[1.0, -1.0, 2.0], [0.5, 0.0, 3.0]]]))
    fire, hist = stats.fire.clone(), stats.hist.clone()
    assert World().sum_stats(stats, [[1]]) is stats and torch.equal(stats.fire, fire) and torch.equal(stats.hist, hist)
    assert World().gather([1, 2]) == [1, 2] and World().share([1, 2, 3]) == [1, 2, 3]


def test_chunks_are_dealt_round_robin_in_rounds_every_rank_sees():
    chunks = [[0, 1], [2, 3], [4, 5], [6]]
    assert World(0, 3).share(chunks) == [[0, 1], [6]] and World(2, 3).share(chunks) == [[4, 5]]
    assert list(World(1, 3).rounds(chunks)) == [([2, 3], 6), ([], 1)]
    assert list(World(0, 3).rounds(chunks)) == [([0, 1], 6), ([6], 1)]
    assert list(World().rounds(chunks)) == [(c, len(c)) for c in chunks]


def test_a_bad_world_size_is_one_line(files, monkeypatch, capsys):
    with pytest.raises(ValueError, match="WORLD_SIZE must be a whole number"):
        with launched("cpu", env={"WORLD_SIZE": "two"}):
            pass
    monkeypatch.setenv("WORLD_SIZE", "0")
    assert main(["identify", *model_args(files), "--trait", "Openness", "--questions", str(files["questions"]),
                 "--descriptions", str(files["descriptions"]), "--out", str(files["root"] / "never")]) == 2
    assert capsys.readouterr().err == "error: WORLD_SIZE must be at least 1, got 0\n"
    assert not (files["root"] / "never").exists()
