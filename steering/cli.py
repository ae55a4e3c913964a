"""The command line: a thin layer over the library. Each command's help is its function's docstring.

Bad input gets one clear line and loses nothing: an option with a bad value is refused by argparse itself
(`error: argument --batch-size: ...`, exit 2), before any model loads; so are input files that do not exist and
output paths that could not be written at the end. A bad line in a file is refused as `error: FILE:LINE: ...` (exit 2)
before anything is generated, and every result file is written to a temporary file and renamed into place, so a
failed run never truncates an earlier result."""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn, Sequence

from .fileio import check_input_file, check_input_folder, check_output_file, check_output_folder
from .traits import POLES, TRAITS, check_trait

MAX_SEED = 2**31  # seeds must be 0 <= seed < 2**31: what every seeded generator here accepts


# -- argument checking ------------------------------------------------------------------------------------------

class _Once(argparse.Action):
    """Store an option's value, refusing the option given twice with different values (argparse would keep the
    last one without a word: `--trait Openness ... --trait Neuroticism` would quietly run Neuroticism)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = namespace.__dict__.setdefault("_given", {})
        if self.dest in given and given[self.dest] != values:
            raise argparse.ArgumentError(self, f"given twice, as {given[self.dest]!r} and {values!r}")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class _Parser(argparse.ArgumentParser):
    """argparse with each refusal on one line, `error: argument --x: ...` (exit 2), not a usage block and a line,
    and with an option given twice with different values refused."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def _argtype(check: Callable[[str], object], name: str) -> Callable[[str], object]:
    """An argparse `type=` from a check that raises ValueError, so argparse reports `argument --x: <the check's
    message>` rather than its generic "invalid value"."""

    def parse(text: str) -> object:
        try:
            return check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    parse.__name__ = name
    return parse


def _whole(text: str, low: int = 1) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if value < low:
        raise ValueError(f"must be at least {low}, got {value}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < MAX_SEED:
        raise ValueError(f"seeds must be 0 <= seed < 2**31 ({MAX_SEED}), got {value}")
    return value


def _number(text: str, low: float = -math.inf, high: float = math.inf) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {text!r}")
    if not low <= value <= high:
        raise ValueError(f"must be at least {low:g} and at most {high:g}, got {value:g}")
    return value


def _learning_rate(text: str) -> float:
    value = _number(text)
    if not 0 < value < 1:
        raise ValueError(f"must be above 0 and below 1, got {value:g}")
    return value


def _strength(text: str) -> float:
    from .npti.induce import check_strength

    return check_strength(_number(text))


def _strength_or_default(text: str) -> float | None:
    return None if text == "default" else _strength(text)


def _method_spec(text: str) -> str:
    from .evaluation.evaluate import Variant

    Variant.parse(text)
    return text


def _not_a_file(text: str) -> str:
    """A folder that may not exist yet (the commands say what is missing in it), but is not a file."""
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file, not a folder")
    return str(path)


POSITIVE = _argtype(_whole, "positive whole number")
COUNT = _argtype(lambda text: _whole(text, 0), "whole number")
SEED = _argtype(_seed, "seed")
STRENGTH = _argtype(_strength, "strength")
STRENGTH_OR_DEFAULT = _argtype(_strength_or_default, "strength")
METHOD_SPEC = _argtype(_method_spec, "method spec")
TRAIT = _argtype(check_trait, "trait")
MIN_DIFF = _argtype(lambda text: _number(text, 0.0, 1.0), "number")
LEARNING_RATE = _argtype(_learning_rate, "learning rate")
IN_FILE = _argtype(lambda text: str(check_input_file(text)), "file")
IN_FOLDER = _argtype(lambda text: str(check_input_folder(text)), "folder")
OUT_FILE = _argtype(lambda text: str(check_output_file(text)), "file")
OUT_FOLDER = _argtype(lambda text: str(check_output_folder(text)), "folder")
PROFILES = _argtype(_not_a_file, "folder")


def _one_line(exc: BaseException) -> str:
    """An error as one line: an OSError as `FILE: reason`, anything else its message with line breaks folded."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


# -- the commands -----------------------------------------------------------------------------------------------

def _progress():
    from tqdm.auto import tqdm

    return tqdm


def _load(args):
    from .engine.models import load_model

    return load_model(args.model, quantization=args.quantization, device=args.device,
                      neuron_module=args.neuron_module)


def _out_folder(given: str | None, lm) -> Path:
    """--out, or where the model's shipped profiles live (checked now, before anything is computed)."""
    from .methods.dispatch import profiles_dir

    return Path(given) if given else check_output_folder(profiles_dir(lm))


def _corpus_triples(trait: str, path: str | None) -> list[tuple[str, str, str]]:
    from .methods.corpus import load_corpus, read_corpus

    pairs = read_corpus(path) if path else load_corpus(trait, "train")
    return [(p.question, p.high, p.low) for p in pairs]


def _read_descriptions(path: str) -> dict[str, list[str]]:
    """--descriptions: {"high": [...], "low": [...]} or a persona bank file (its "descriptions"), every description
    a non-empty string; anything else is refused naming the file and the line or entry."""
    from .methods.questions import json_type

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file of descriptions ({_one_line(exc)})") from exc
    if isinstance(data, dict) and isinstance(data.get("descriptions"), dict):
        data = data["descriptions"]
    if not isinstance(data, dict) or not all(isinstance(data.get(p), list) and data[p] for p in POLES):
        raise ValueError(f'{path}: expected {{"high": [...], "low": [...]}}, each a non-empty list of descriptions')
    for pole in POLES:
        for i, text in enumerate(data[pole]):
            if not isinstance(text, str) or not text.strip():
                what = "empty" if isinstance(text, str) else json_type(text)
                raise ValueError(f'{path}: "{pole}"[{i}] is {what}; every description must be a non-empty string')
    return {pole: [text.strip() for text in data[pole]] for pole in POLES}


def _questions_by_trait(path: str, traits: Sequence[str]) -> dict[str, list[str]]:
    """evaluate's --questions: a row with a "trait" counts for that trait only (refused by file and line when it
    names no Big Five trait), a row without for every trait."""
    from .methods.questions import read_question_lines

    rows = []
    for n, row in read_question_lines(path):
        try:
            trait = check_trait(row["trait"]) if "trait" in row else None
        except ValueError as exc:
            raise ValueError(f'{path}:{n}: "trait": {exc}') from exc
        rows.append((trait, row["question"]))
    return {t: [q for trait, q in rows if trait in (None, t)] for t in traits}


def cmd_identify(args) -> int:
    """Identify a trait's neurons on a model and keep the neurons whose firing differs most between the poles.

    --source generated (the paper's way): answer every question under a random high-pole and a random low-pole
    persona description and record neuron activity over the generated tokens; writes OUT/<Trait>_high.json,
    OUT/<Trait>_low.json and the persona-prompted answers to OUT/answers/<Trait>.jsonl. --descriptions is a JSON
    file {"high": ["You are ...", ...], "low": [...]} (or a persona bank file). Every file is replaced only when
    the run succeeds: a failed rerun leaves the earlier ones as they were.

    --source corpus: record neuron activity while the model READS each pole's corpus answers (teacher forcing, the
    answer's tokens only); --corpus FILE (default: the bank corpus's train split of the trait); writes
    OUT/<Trait>_high.corpus.json and OUT/<Trait>_low.corpus.json."""
    from .engine.generation import Decoding
    from .npti.identify import Selection, identify, identify_corpus
    from .methods.dispatch import profile_path
    from .methods.questions import read_questions
    from .npti.record import Bins

    if args.source == "corpus":
        triples = _corpus_triples(args.trait, args.corpus)[: args.limit]
        lm = _load(args)
        result = identify_corpus(lm, args.trait, triples, batch_size=args.batch_size,
                                 selection=Selection(args.top_k, args.min_diff), progress=_progress())
        for profile in (result.high, result.low):
            path = profile.save(profile_path(Path(args.out), profile.trait, profile.pole, "corpus"))
            print(f"{path}: {len(profile)} neurons over {profile.meta['tokens']} read tokens")
        return 0
    if not args.questions or not args.descriptions:
        raise ValueError("--source generated needs --questions and --descriptions")
    questions = [row["question"] for row in read_questions(args.questions)][: args.limit]
    descriptions = _read_descriptions(args.descriptions)
    lm = _load(args)
    out = Path(args.out)
    answers = out / "answers" / f"{args.trait}.jsonl"  # replaced only when identification finishes
    result = identify(lm, args.trait, questions, descriptions,
                      decoding=Decoding(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size,
                      seed=args.seed, bins=Bins(), selection=Selection(args.top_k, args.min_diff),
                      answers_path=answers, progress=_progress())
    for profile in (result.high, result.low):
        path = profile.save(out / f"{profile.name}.json")
        print(f"{path}: {len(profile)} neurons over {profile.meta['tokens']} generated tokens")
    print(f"{answers}: {len(result.answers)} persona-prompted answers")
    return 0


def cmd_build_profiles(args) -> int:
    """Build a model's shipped NPTI profiles for every trait, with a manifest.json that records this command, the
    counts, neurons per pole and per layer, and timings.

    --source generated (the paper's way): identification on the persona bank's search questions, writing
    profiles/<model>/<Trait>_<pole>.json and the persona-prompted answers under answers/. --source corpus: from the
    model reading the corpus's train split, writing profiles/<model>/<Trait>_<pole>.corpus.json."""
    from .build import build_corpus_profiles, build_profiles
    from .engine.generation import Decoding
    from .npti.identify import Selection

    lm = _load(args)
    folder = _out_folder(args.out, lm)
    if args.source == "corpus":
        manifest = build_corpus_profiles(lm, folder, args.traits, batch_size=args.batch_size,
                                         selection=Selection(args.top_k, args.min_diff), limit=args.limit,
                                         progress=_progress())
        for trait in args.traits:
            entry = manifest["traits"][trait]["corpus"]
            print(f"{trait} (corpus): {entry['high']['neurons']} high / {entry['low']['neurons']} low neurons, "
                  f"max diff {entry['high']['max_diff']:.3f} / {entry['low']['max_diff']:.3f}, "
                  f"{entry['seconds']:.0f} s")
        print(f"{folder / 'manifest.json'}")
        return 0
    manifest = build_profiles(lm, folder, args.traits, decoding=Decoding(max_new_tokens=args.max_new_tokens),
                              batch_size=args.batch_size, seed=args.seed,
                              selection=Selection(args.top_k, args.min_diff), limit=args.limit, progress=_progress())
    for trait in args.traits:
        entry = manifest["traits"][trait]
        print(f"{trait}: {entry['high']['neurons']} high / {entry['low']['neurons']} low neurons, "
              f"{entry['seconds']:.0f} s")
    print(f"{folder / 'manifest.json'}")
    return 0


def cmd_sweep(args) -> int:
    """Choose each pole's shipped NPTI configuration (source and strength) and vector configuration (layers and
    strength) by rule: every configuration of a grid answers every development question of the trait at both poles
    with the studio's decoding (sampling, 96 tokens) beside the base model; the offline judge (trained on our
    corpus) scores the answers; per pole and method the default is the configuration with the best win rate over
    the base model's answers among those that stay fluent (repeated-4-gram share <= base + 0.05, distinct-2 >= base
    - 0.05, median perplexity <= 1.5x base). Answers and judgments go to OUT (resumable: rerun to continue); the
    table and the choices go to the manifest, the profiles and the vector cards."""
    from .methods import bank
    from .evaluation.evaluate import OfflineJudge, Plan, generate_answers, joined, judge_answers
    from .evaluation.sweep import Fluent, grid, pole_rows, record_choices

    lm = _load(args)
    folder = _out_folder(args.profiles, lm)
    out = Path(args.out)
    specs = grid(lm.sites.n_layers, tuple(args.methods))
    plan = Plan(tuple(specs), tuple(args.traits), seed=args.seed, max_new_tokens=args.max_new_tokens, sample=True)
    questions = {t: bank.questions(t, "dev")[: args.questions_per_trait] for t in plan.traits}
    judge = OfflineJudge(lm)
    settings = {"command": " ".join(["python -m steering"] + sys.argv[1:]), "specs": specs,
                "questions": {t: len(q) for t, q in questions.items()}, "max_new_tokens": args.max_new_tokens,
                "decoding": "sampling, temperature 0.7, top-p 0.9", "seed": args.seed, "judge": judge.name,
                "quantization": lm.quantization, "answers": str(out)}
    for trait in plan.traits:  # trait by trait, so the choices of a finished trait land even if a later one stops
        one = Plan(plan.methods, (trait,), seed=plan.seed, max_new_tokens=plan.max_new_tokens, sample=True)
        answers = generate_answers(lm, one, {trait: questions[trait]}, out, args.batch_size, _progress(), folder)
        rows = pole_rows(joined(answers, judge_answers(judge, answers, out, progress=_progress())), Fluent())
        chosen = record_choices(folder, rows, settings)
        for r in rows:
            print(f"{trait:>17} {r['pole']:>4} {r['variant']:<22} win {r['win']:.2f}  toward {r['toward']:.3f}  "
                  f"rep4 {r['repeat4']:.3f}  d2 {r['distinct2']:.3f}  ppl {r['perplexity']:.1f}"
                  f"{'' if r['fluent'] else '  (not fluent)'}")
        print(f"{trait}: chosen {chosen}")
    return 0


def _training(args):
    """The Training of `finetune`: the data source's defaults, overridden by what the command line gave."""
    from dataclasses import replace

    from .methods.finetune import CORPUS_TRAINING, Training

    base = CORPUS_TRAINING if args.data == "corpus" else Training()
    given = {"rank": args.rank, "alpha": args.alpha, "learning_rate": args.learning_rate, "epochs": args.epochs,
             "max_answer_tokens": args.max_answer_tokens, "top_layers": args.top_layers,
             "batch_size": args.batch_size}
    training = replace(base, seed=args.seed, **{k: v for k, v in given.items() if v is not None})
    if training.top_layers == 0:
        training = replace(training, top_layers=None)
    if args.targets:
        training = replace(training, targets=None if args.targets == ["none"] else tuple(args.targets))
    return training


def cmd_finetune(args) -> int:
    """Train the fine-tuned baseline: one LoRA adapter per trait pole, by supervised fine-tuning on (plain
    question -> an answer that plays the pole).

    --data corpus (the default): that pole's answer in the corpus's train split; each adapter goes to
    OUT/adapters/<Trait>_<pole>/. --data persona: the answer the model gave under that pole's persona prompt
    (profiles/<model>/answers/<Trait>.jsonl, or --answers FILE); each adapter goes to
    OUT/adapters-persona/<Trait>_<pole>/. Each comes with training.json and loss.csv, and gets an entry in
    OUT/manifest.json.

    On a CPU the base model is trained in float32 (--quantization none, the default here); on a CUDA device
    --quantization nf4 trains QLoRA."""
    from .build import record_adapter
    from .methods.finetune import corpus_pairs, finetune, training_pairs
    from .methods.dispatch import adapter_folder, profiles_dir

    training = _training(args)
    traits = args.trait or list(TRAITS)
    poles = [args.pole] if args.pole else list(POLES)
    lm = _load(args)
    out = _out_folder(args.out, lm)
    for trait in traits:
        answers = Path(args.answers) if args.answers else profiles_dir(lm) / "answers" / f"{trait}.jsonl"
        for pole in poles:
            if args.data == "corpus":
                pairs = corpus_pairs(trait, pole)[: args.limit]
            else:
                pairs = training_pairs(answers, trait, pole)[: args.limit]
            folder = adapter_folder(lm, trait, pole, args.data, out)
            card = finetune(lm, pairs, training, folder, trait, pole, progress=_progress(), data=args.data)
            record_adapter(out, card, args.data)
            print(f"{folder}: {card.examples} examples, {card.steps} steps, final loss {card.final_loss:.3f}, "
                  f"{card.seconds:.0f} s, {card.size_bytes / 1e6:.1f} MB")
    return 0


def cmd_generate(args) -> int:
    """Answer every question of a PersonalityBench JSONL file with one method for one trait pole, and write each
    line back with its "answer" and the parameters used. OUT is written once, at the end, and renamed into place:
    a failed run leaves an earlier file there as it was."""
    from .engine.generation import Decoding
    from .methods.dispatch import MethodUnavailable, Request, answer, unavailable
    from .methods.questions import read_questions, write_jsonl

    rows = read_questions(args.questions)
    request = Request(args.method, args.trait, args.pole, args.strength, args.seed, args.top_neurons, args.source,
                      tuple(args.layers) if args.layers else None)
    lm = _load(args)
    profiles = Path(args.profiles) if args.profiles else None
    if request.layers:
        from .methods.vector import check_layers

        check_layers(request.layers, lm.sites.n_layers)
    if why := unavailable(lm, request.method, request.trait, request.pole, profiles, request.source):
        raise MethodUnavailable(why)  # before any generation: one line, nothing written
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    out = []
    batches = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    for batch in _progress()(batches, desc=f"{args.method} {request.trait} {request.pole}"):
        answers, params = answer(lm, request, [r["question"] for r in batch], decoding, profiles, args.steer_prompt)
        picks = params.pop("descriptions", None)
        for i, (row, ans) in enumerate(zip(batch, answers)):
            extra = {"description": picks[i]} if picks else {}
            out.append({**row, "answer": ans.text, **params, **extra, "model": lm.name,
                        "max_new_tokens": args.max_new_tokens, "n_tokens": ans.n_tokens})
    write_jsonl(args.out, out)
    print(f"{args.out}: {len(out)} answers")
    return 0


def cmd_evaluate(args) -> int:
    """The paper's table from one command: answer every question with every method (npti at each --strengths;
    "default" = the pole's shipped strength) for both poles of every trait, judge every answer, and write to OUT:
    answers.jsonl and judgments-<judge>.jsonl (both resumable: rerun the same command to continue), table.csv and
    table.md (method x trait: high-pole and low-pole trait scores, fluency), strength.png (trait score against
    strength per pole) and run.json.

    --judge offline needs no API: the offline judge trained on our corpus (P(high pole), 0-1) and a fluency score
    from the unsteered model (1 / (perplexity x (1 + repeated-4-gram share)), 0-1), labelled as such in every
    output. pairs.csv and pairs.md add, per method spec and trait, the separation of the poles and the paired win
    rate, with repetition, distinct-2 and perplexity. --judge openai uses any OpenAI-compatible endpoint
    from the environment: PERSONA_STUDIO_JUDGE_BASE_URL (or OPENAI_BASE_URL), PERSONA_STUDIO_JUDGE_MODEL,
    PERSONA_STUDIO_JUDGE_API_KEY (or OPENAI_API_KEY); replies are cached in OUT/judge-cache.jsonl.

    --questions is a PersonalityBench JSONL file; rows with a "trait" field count for that trait only, rows without
    for every trait. Without --questions, each trait's development questions from the persona bank."""
    from .methods import bank
    from .evaluation.evaluate import OfflineJudge, Plan, generate_answers, joined, judge_answers, judge_scales, run_settings, \
        write_outputs
    from .fileio import write_text_atomic

    plan = Plan(tuple(args.methods), tuple(args.traits), tuple(args.strengths), args.seed, args.max_new_tokens,
                args.sample)
    if args.questions:
        questions = _questions_by_trait(args.questions, plan.traits)
    else:
        questions = {t: bank.questions(t, "dev") for t in plan.traits}
    questions = {t: q[: args.questions_per_trait] for t, q in questions.items()}
    if empty := [t for t, q in questions.items() if not q]:
        raise ValueError(f"no questions for {', '.join(empty)}" + (f" in {args.questions}" if args.questions else ""))
    out = Path(args.out)
    if args.judge == "openai":
        from .evaluation.judge import JudgeSettings, OpenAIJudge

        judge = OpenAIJudge(JudgeSettings.from_env(cache=out / "judge-cache.jsonl"))
    lm = _load(args)
    if args.judge == "offline":
        judge = OfflineJudge(lm)
    answers = generate_answers(lm, plan, questions, out, args.batch_size, _progress(),
                               Path(args.profiles) if args.profiles else None)
    settings = run_settings(plan, lm.name, judge, questions, answers)
    write_text_atomic(out / "run.json", json.dumps(settings, indent=1) + "\n")
    judgments = judge_answers(judge, answers, out, progress=_progress())
    table = write_outputs(joined(answers, judgments), out, judge.name, judge_scales(judge))
    print((out / "table.md").read_text())
    print((out / "pairs.md").read_text())
    print(f"{out}: {len(answers)} answers, {len(judgments)} judgments by {judge.name}, table of {len(table)} rows")
    return 0


def cmd_build_vectors(args) -> int:
    """Build each trait's activation vector for a model: the mean residual stream over the answer tokens of the
    corpus's high-pole answers minus that of its low-pole answers (train split, read with teacher forcing), per
    layer, with the layer's typical residual norm and the read-out layer (the one whose per-answer projections
    separate the poles best on train). Writes profiles/<model>/<Trait>.vector.safetensors and .json."""
    from .build import build_vectors

    lm = _load(args)
    folder = _out_folder(args.out, lm)
    manifest = build_vectors(lm, folder, args.traits, batch_size=args.batch_size, limit=args.limit,
                             progress=_progress())
    for trait in args.traits:
        entry = manifest["vectors"][trait]
        print(f"{trait}: read-out layer {entry['readout_layer']} (d = {max(entry['separation_d']):.2f}), "
              f"steering layers {entry['layers']}, {entry['seconds']:.0f} s")
    return 0


def cmd_fit_judge(args) -> int:
    """Fit the offline trait judge: per trait, a logistic regression on all-MiniLM-L6-v2 sentence embeddings of the
    corpus's train-split answers (high = 1, low = 0), its regularisation chosen by 5-fold cross-validation on train.
    Writes profiles/judge/trait_judge.json (or --out) with its training card (data size, dev AUC, date, versions)."""
    from .evaluation.traitjudge import fit_trait_judge

    judge = fit_trait_judge(traits=args.traits)
    path = judge.save(args.out)
    for trait, info in judge.card["traits"].items():
        cv = info["cv_auc"]
        print(f"{trait}: {info['train_pairs']} train pairs, cross-validated AUC on train: sentences "
              f"{cv['sentences']:.3f}, words {cv['words']:.3f}, combined {cv['combined']:.3f}; "
              f"dev_auc={info['dev_auc']:.3f}")
    print(path)
    return 0


def cmd_judge_check(args) -> int:
    """Measure the shipped offline trait judge, computed now from the shipped files: per trait the AUC of high
    against low answers on the corpus's dev split, on its extra pairs (a final check, used for no choice), and on
    the default model's persona-prompted answers (profiles/<model>/answers/; this measures how far the persona
    prompt moved the model, not the judge). Prints one line per trait and the mean dev AUC."""
    from .evaluation.traitjudge import TraitJudge, check_judge

    judge = TraitJudge.load(args.judge)
    rows = check_judge(judge, Path(args.answers) if args.answers else None)
    for row in rows:
        persona = "nan" if row["persona_auc"] is None else f"{row['persona_auc']:.3f}"
        print(f"{row['trait']} dev_auc={row['dev_auc']:.3f} extra_auc={row['extra_auc']:.3f} "
              f"persona_auc={persona} n={row['n']}")
    print(f"mean dev_auc={sum(r['dev_auc'] for r in rows) / len(rows):.3f}")
    return 0


# -- the parser ---------------------------------------------------------------------------------------------------

def _model_args(p: argparse.ArgumentParser) -> None:
    from .engine.models import QUANTIZATIONS

    p.add_argument("--model", default="default",
                   help="'default' (embedded SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file")
    p.add_argument("--quantization", default=None, choices=QUANTIZATIONS,
                   help="default: nf4 on a CUDA device, bf16 on a CPU")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--neuron-module", default=None,
                   help="activation module path with {} for the layer, for architectures not recognised")
    p.add_argument("--batch-size", type=POSITIVE, default=8)
    p.add_argument("--seed", type=SEED, default=0, help="0 <= seed < 2**31")


def _identify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=POSITIVE, default=128)
    p.add_argument("--top-k", type=POSITIVE, default=2000, help="neurons kept always (paper: 2000)")
    p.add_argument("--min-diff", type=MIN_DIFF, default=0.1, help="then keep while diff >= this (paper: 0.1)")


def _command(sub, name: str, func: Callable, summary: str) -> argparse.ArgumentParser:
    """A sub-command whose help is its function's docstring."""
    p = sub.add_parser(name, help=summary, description=inspect.cleandoc(func.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _add_identify(sub) -> None:
    p = _command(sub, "identify", cmd_identify, "find a trait's neurons")
    _model_args(p)
    p.add_argument("--trait", required=True, type=TRAIT, choices=TRAITS)
    p.add_argument("--source", default="generated", choices=("generated", "corpus"),
                   help="generated: persona-prompted answers (the paper); corpus: read the corpus's answers")
    p.add_argument("--questions", type=IN_FILE, default=None, help="PersonalityBench JSONL (--source generated)")
    p.add_argument("--descriptions", type=IN_FILE, default=None,
                   help='JSON {"high": [...], "low": [...]} or a persona bank file (--source generated)')
    p.add_argument("--corpus", type=IN_FILE, default=None,
                   help="corpus JSONL (--source corpus; default: the bank's train split)")
    p.add_argument("--out", type=OUT_FOLDER, required=True, help="folder for the two profiles and the answers")
    p.add_argument("--limit", type=POSITIVE, default=None, help="use only the first N questions")
    _identify_args(p)


def _add_build_profiles(sub) -> None:
    p = _command(sub, "build-profiles", cmd_build_profiles, "identify every trait from the persona bank")
    _model_args(p)
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)
    p.add_argument("--source", default="generated", choices=("generated", "corpus"),
                   help="generated: persona-prompted answers (the paper); corpus: read the corpus's answers")
    p.add_argument("--out", type=OUT_FOLDER, default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=POSITIVE, default=None, help="use only the first N search questions per trait")
    _identify_args(p)


def _add_sweep(sub) -> None:
    p = _command(sub, "sweep", cmd_sweep, "choose the NPTI and vector defaults by rule")
    _model_args(p)
    p.set_defaults(batch_size=24)
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)
    p.add_argument("--methods", nargs="+", default=["npti", "vector"], choices=("npti", "vector"))
    p.add_argument("--profiles", type=OUT_FOLDER, default=None,
                   help="folder of profiles and vectors, where the choices are written (default: profiles/<model>/)")
    p.add_argument("--questions-per-trait", type=POSITIVE, default=None, help="default: every development question")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=96)
    p.add_argument("--out", type=OUT_FOLDER, required=True,
                   help="folder for the sweep's answers and judgments (resumable)")


def _add_finetune(sub) -> None:
    from .methods.finetune import CORPUS_TRAINING, Training

    p = _command(sub, "finetune", cmd_finetune, "train the LoRA baseline")
    _model_args(p)
    p.set_defaults(quantization="none", batch_size=None)
    p.add_argument("--trait", nargs="+", type=TRAIT, default=None, choices=TRAITS, help="default: every trait")
    p.add_argument("--pole", default=None, choices=POLES, help="default: both")
    p.add_argument("--data", default="corpus", choices=("corpus", "persona"),
                   help="corpus: the corpus's train split; persona: the persona-prompted answers")
    p.add_argument("--answers", type=IN_FILE, default=None,
                   help="persona-prompted answers JSONL (--data persona; default: shipped)")
    p.add_argument("--out", type=OUT_FOLDER, default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=POSITIVE, default=None, help="train on the first N answers only")
    p.add_argument("--rank", type=POSITIVE, default=None, help=f"default {Training.rank}")
    p.add_argument("--alpha", type=POSITIVE, default=None, help=f"default {Training.alpha}")
    p.add_argument("--targets", nargs="+", default=None,
                   help=f"module names to adapt (default {' '.join(Training.targets)}; 'none': peft's default)")
    p.add_argument("--learning-rate", type=LEARNING_RATE, default=None, help=f"default {Training.learning_rate}")
    p.add_argument("--epochs", type=POSITIVE, default=None,
                   help=f"default {CORPUS_TRAINING.epochs} (--data corpus), {Training.epochs} (--data persona)")
    p.add_argument("--max-answer-tokens", type=POSITIVE, default=None,
                   help=f"default {CORPUS_TRAINING.max_answer_tokens} (--data corpus), {Training.max_answer_tokens} "
                        "(--data persona)")
    p.add_argument("--top-layers", type=COUNT, default=None,
                   help=f"adapt only the last N layers (default {Training.top_layers}; 0: every layer)")


def _add_build_vectors(sub) -> None:
    p = _command(sub, "build-vectors", cmd_build_vectors, "build each trait's activation vector from the corpus")
    _model_args(p)
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)
    p.add_argument("--out", type=OUT_FOLDER, default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=POSITIVE, default=None, help="use only the first N train pairs per trait")


def _add_judge_commands(sub) -> None:
    p = _command(sub, "fit-judge", cmd_fit_judge, "fit the offline trait judge on the corpus")
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)
    p.add_argument("--out", type=OUT_FILE, default=None, help="judge file (default: profiles/judge/trait_judge.json)")

    p = _command(sub, "judge-check", cmd_judge_check, "AUCs of the shipped offline trait judge")
    p.add_argument("--judge", type=IN_FILE, default=None, help="judge file (default: profiles/judge/trait_judge.json)")
    p.add_argument("--answers", type=IN_FOLDER, default=None,
                   help="folder of persona-prompted answers <Trait>.jsonl (default: the default model's)")


def _add_generate(sub) -> None:
    from .methods.dispatch import METHODS

    p = _command(sub, "generate", cmd_generate, "answer questions with one method")
    _model_args(p)
    p.add_argument("--questions", type=IN_FILE, required=True, help="PersonalityBench JSONL")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--trait", required=True, type=TRAIT, choices=TRAITS)
    p.add_argument("--pole", required=True, choices=POLES)
    p.add_argument("--strength", type=STRENGTH, default=None,
                   help="NPTI or vector strength, 0 to 4 (default: the shipped one)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=128)
    p.add_argument("--profiles", type=PROFILES, default=None,
                   help="folder of NPTI profiles (default: profiles/<model>/)")
    p.add_argument("--steer-prompt", action="store_true", help="NPTI: steer the prompt pass too")
    p.add_argument("--top-neurons", type=COUNT, default=None,
                   help="NPTI: use each pole's N neurons of largest diff (0: all, the paper's method; "
                        "default: the profile's shipped choice)")
    p.add_argument("--source", default=None, choices=("generated", "corpus", "persona"),
                   help="npti: generated | corpus profiles; sft: corpus | persona adapters (default: the shipped one)")
    p.add_argument("--layers", type=COUNT, nargs="+", default=None,
                   help="vector: the layers to steer (default: shipped)")
    p.add_argument("--out", type=OUT_FILE, required=True, help="the answers file (JSONL)")


def _add_evaluate(sub) -> None:
    from .methods.dispatch import METHODS

    p = _command(sub, "evaluate", cmd_evaluate, "the paper's table: generate, judge, tabulate")
    _model_args(p)
    p.set_defaults(batch_size=16)
    p.add_argument("--questions", type=IN_FILE, default=None,
                   help="PersonalityBench JSONL (default: the bank's dev questions)")
    p.add_argument("--questions-per-trait", type=POSITIVE, default=None, help="use only the first N per trait")
    p.add_argument("--methods", nargs="+", type=METHOD_SPEC, default=list(METHODS),
                   help="method specs method[@source][:strength][/layers], e.g. base p2 sft@persona npti@corpus:1.5 "
                        "vector:0.05/14,15,16; what a spec leaves out is the shipped default")
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)
    p.add_argument("--sample", action="store_true",
                   help="decode as the studio does (temperature 0.7, top-p 0.9; seeded per question) instead of greedy")
    p.add_argument("--strengths", nargs="+", type=STRENGTH_OR_DEFAULT, default=[None],
                   help="NPTI strengths, numbers in [0, 4] or 'default' (the shipped one)")
    p.add_argument("--judge", choices=("offline", "openai"), default="offline")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=128)
    p.add_argument("--profiles", type=PROFILES, default=None,
                   help="folder of NPTI profiles and adapters (default: profiles/<model>/)")
    p.add_argument("--out", type=OUT_FOLDER, required=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m steering", description=__doc__,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_identify, _add_build_profiles, _add_sweep, _add_finetune, _add_build_vectors,
                _add_judge_commands, _add_generate, _add_evaluate):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; return its exit status: 0, or 2 for bad input, with one line on stderr that names the
    option, or the file and line."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help (0), or a bad argument (2), its one line already printed
        return exc.code if isinstance(exc.code, int) else 2
    from .methods.dispatch import MethodUnavailable
    from .engine.models import ModelLoadError
    from .npti.profile import ProfileError

    try:
        return args.func(args)
    except (MethodUnavailable, ModelLoadError, ProfileError, ValueError, OSError) as exc:
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 2
