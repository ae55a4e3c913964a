"""The offline trait judge: the shipped one separates the corpus's poles (judge-check), saves and loads exactly, and
refuses a file made for another encoder or version."""

from __future__ import annotations

import json

import numpy as np
import pytest

from steering.evaluation.traitjudge import JUDGE_VERSION, JudgeFileError, TraitJudge, judge_path


@pytest.fixture(scope="module")
def shipped():
    return TraitJudge.load()


@pytest.mark.slow
def test_judge_check_on_the_shipped_judge(capsys):
    from steering.cli import main

    assert main(["judge-check"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 6 and lines[-1].startswith("mean dev_auc=")
    for line in lines[:5]:
        fields = dict(f.split("=") for f in line.split()[1:])
        assert set(fields) == {"dev_auc", "extra_auc", "persona_auc", "n"}
    assert float(lines[-1].split("=")[1]) >= 0.9  # README: >= 0.95 per trait when fitted; this guards regressions


def test_plain_examples_lean_the_right_way(shipped):
    p = shipped.p_high("Extraversion", [
        "I'd be the first one there, chatting to everyone and dragging people onto the dance floor all night.",
        "I'd stay for an hour, talk quietly with one friend in a corner, then slip home to read in peace."])
    assert 0 <= p[1] < 0.5 < p[0] <= 1


def test_a_judge_saves_and_loads_to_the_same_scores(shipped, tmp_path):
    path = shipped.save(tmp_path / "judge.json")
    back = TraitJudge.load(path, encoder=shipped._encoder())
    texts = ["I worry about it all night.", "I shrug and sleep well."]
    np.testing.assert_allclose(back.p_high("Neuroticism", texts), shipped.p_high("Neuroticism", texts), rtol=1e-9)


def test_a_judge_file_for_another_encoder_or_version_is_refused_with_both_names(tmp_path):
    data = json.loads(judge_path().read_text())
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**data, "encoder": "e5-small"}))
    with pytest.raises(JudgeFileError, match="encoder 'e5-small', but the encoder here is 'all-MiniLM-L6-v2'"):
        TraitJudge.load(other)
    other.write_text(json.dumps({**data, "version": JUDGE_VERSION + 1}))
    with pytest.raises(JudgeFileError, match=f"version {JUDGE_VERSION + 1}, but this code reads version {JUDGE_VERSION}"):
        TraitJudge.load(other)
    other.write_text("{")
    with pytest.raises(JudgeFileError, match="not a readable trait judge file"):
        TraitJudge.load(other)
