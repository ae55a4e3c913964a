"""The commands that make and choose a model's NPTI profiles: `identify` (one trait), `build-profiles` (every trait,
shipped) and `sweep` (each pole's shipped NPTI and vector configuration, by rule). Their defaults: `Selection`
(--top-k, --min-diff) and `Decoding` (--max-new-tokens; the sweep decodes as the studio does)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..traits import POLES, TRAITS
from .common import (IN_FILE, MIN_DIFF, OUT_FOLDER, POSITIVE, TRAIT, command, load, model_options, one_line,
                     out_folder, progress, shipped_out_options, traits_option)


def _corpus_triples(trait: str, path: str | None) -> list[tuple[str, str, str]]:
    from ..methods.corpus import load_corpus, read_corpus

    pairs = read_corpus(path) if path else load_corpus(trait, "train")
    return [(p.question, p.high, p.low) for p in pairs]


def _read_descriptions(path: str) -> dict[str, list[str]]:
    """--descriptions: {"high": [...], "low": [...]} or a persona bank file (its "descriptions"), every description
    a non-empty string; anything else is refused naming the file and the line or entry."""
    from ..methods.questions import json_type

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: not JSON ({exc.msg})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file of descriptions ({one_line(exc)})") from exc
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


def _selection(args):
    from ..npti.identify import Selection

    return Selection(args.top_k, args.min_diff)


def _decoding(args):
    from ..engine.generation import Decoding

    return Decoding(max_new_tokens=args.max_new_tokens)


def _identify_corpus(args) -> int:
    from ..methods.dispatch import profile_path
    from ..npti.identify import identify_corpus

    triples = _corpus_triples(args.trait, args.corpus)[: args.limit]
    lm = load(args)
    result = identify_corpus(lm, args.trait, triples, batch_size=args.batch_size, selection=_selection(args),
                             progress=progress(), world=args.world)
    if not args.world.writer:
        return 0
    for profile in (result.high, result.low):
        path = profile.save(profile_path(Path(args.out), profile.trait, profile.pole, "corpus"))
        print(f"{path}: {len(profile)} neurons over {profile.meta['tokens']} read tokens")
    return 0


def cmd_identify(args) -> int:
    """Identify a trait's neurons on a model and keep the neurons whose firing differs most between the poles.

    --source generated (the paper's way): answer every question under a random high-pole and a random low-pole
    persona description and record neuron activity over the generated tokens; writes OUT/<Trait>_high.json,
    OUT/<Trait>_low.json and the persona-prompted answers to OUT/answers/<Trait>.jsonl. --descriptions is a JSON
    file {"high": ["You are ...", ...], "low": [...]} (or a persona bank file). Every file is replaced only when
    the run succeeds: a failed rerun leaves the earlier ones as they were.

    --source corpus: record neuron activity while the model READS each pole's corpus answers (teacher forcing, the
    answer's tokens only); --corpus FILE (default: the bank corpus's train split of the trait); writes
    OUT/<Trait>_high.corpus.json and OUT/<Trait>_low.corpus.json.

    Shared out over processes, unchanged: `torchrun --nproc-per-node N -m steering identify ...` (or accelerate
    launch) gives each process its share of the batches and sums the counts (gloo on a CPU, NCCL on CUDA); the
    files are those one process would write, and rank 0 writes them."""
    from ..methods.questions import read_questions
    from ..npti.identify import identify
    from ..npti.record import Bins

    if args.source == "corpus":
        return _identify_corpus(args)
    if not args.questions or not args.descriptions:
        raise ValueError("--source generated needs --questions and --descriptions")
    questions = [row["question"] for row in read_questions(args.questions)][: args.limit]
    descriptions = _read_descriptions(args.descriptions)
    lm = load(args)
    out = Path(args.out)
    answers = out / "answers" / f"{args.trait}.jsonl"  # replaced only when identification finishes
    result = identify(lm, args.trait, questions, descriptions, decoding=_decoding(args), batch_size=args.batch_size,
                      seed=args.seed, bins=Bins(), selection=_selection(args), answers_path=answers,
                      progress=progress(), world=args.world)
    if not args.world.writer:  # every rank holds the result; rank 0 writes it
        return 0
    for profile in (result.high, result.low):
        path = profile.save(out / f"{profile.name}.json")
        print(f"{path}: {len(profile)} neurons over {profile.meta['tokens']} generated tokens")
    print(f"{answers}: {len(result.answers)} persona-prompted answers")
    return 0


def _build_corpus_profiles(args, lm, folder: Path) -> None:
    from ..build import build_corpus_profiles

    manifest = build_corpus_profiles(lm, folder, args.traits, batch_size=args.batch_size, selection=_selection(args),
                                     limit=args.limit, progress=progress(), world=args.world)
    if not args.world.writer:
        return
    for trait in args.traits:
        entry = manifest["traits"][trait]["corpus"]
        print(f"{trait} (corpus): {entry['high']['neurons']} high / {entry['low']['neurons']} low neurons, "
              f"max diff {entry['high']['max_diff']:.3f} / {entry['low']['max_diff']:.3f}, "
              f"{entry['seconds']:.0f} s")


def cmd_build_profiles(args) -> int:
    """Build a model's shipped NPTI profiles for every trait, with a manifest.json that records this command, the
    counts, neurons per pole and per layer, and timings.

    --source generated (the paper's way): identification on the persona bank's search questions, writing
    profiles/<model>/<Trait>_<pole>.json and the persona-prompted answers under answers/. --source corpus: from the
    model reading the corpus's train split, writing profiles/<model>/<Trait>_<pole>.corpus.json. Runs under torchrun
    or accelerate launch as identify does."""
    from ..build import build_profiles

    lm = load(args)
    folder = out_folder(args.out, lm)
    if args.source == "corpus":
        _build_corpus_profiles(args, lm, folder)
    else:
        manifest = build_profiles(lm, folder, args.traits, decoding=_decoding(args), batch_size=args.batch_size,
                                  seed=args.seed, selection=_selection(args), limit=args.limit,
                                  progress=progress(), world=args.world)
        if not args.world.writer:  # every rank holds the result; rank 0 wrote it
            return 0
        for trait in args.traits:
            entry = manifest["traits"][trait]
            print(f"{trait}: {entry['high']['neurons']} high / {entry['low']['neurons']} low neurons, "
                  f"{entry['seconds']:.0f} s")
    if args.world.writer:
        print(f"{folder / 'manifest.json'}")
    return 0


def _sweep_settings(args, specs, questions, judge, lm, decoding) -> dict:
    """What the manifest records of a sweep."""
    return {"command": " ".join(["python -m steering"] + sys.argv[1:]), "specs": specs,
            "questions": {t: len(q) for t, q in questions.items()}, "max_new_tokens": args.max_new_tokens,
            "decoding": f"sampling, temperature {decoding.temperature:g}, top-p {decoding.top_p:g}",
            "seed": args.seed, "judge": judge.name, "quantization": lm.quantization, "answers": args.out,
            "processes": args.world.size}


def cmd_sweep(args) -> int:
    """Choose each pole's shipped NPTI configuration (source and strength) and vector configuration (layers and
    strength) by rule: every configuration of a grid answers every development question of the trait at both poles
    with the studio's decoding (sampling, 96 tokens) beside the base model; the offline judge (trained on our
    corpus) scores the answers; per pole and method the default is the configuration with the best win rate over
    the base model's answers among those that stay fluent (repeated-4-gram share <= base + 0.05, distinct-2 >= base
    - 0.05, median perplexity <= 1.5x base). Answers and judgments go to OUT (resumable: rerun to continue); the
    table and the choices go to the manifest, the profiles and the vector cards.

    Shared out over processes like `evaluate` (torchrun --nproc-per-node N -m steering sweep ...): each process makes
    and judges its share of the answers; rank 0 writes every file and makes the choices one process would make."""
    from ..engine.generation import Decoding
    from ..evaluation.evaluate import Plan, generate_answers, joined, judge_answers
    from ..evaluation.judges import make_judge
    from ..evaluation.sweep import Fluent, grid, pole_rows, record_choices
    from ..methods import bank

    lm = load(args)
    folder, out, world = out_folder(args.profiles, lm), Path(args.out), args.world
    specs = grid(lm.sites.n_layers, tuple(args.methods))
    questions = {t: bank.questions(t, "dev")[: args.questions_per_trait] for t in args.traits}
    judge = make_judge("offline", lm)
    settings = _sweep_settings(args, specs, questions, judge, lm, Decoding.studio())
    for trait in args.traits:  # trait by trait, so the choices of a finished trait land even if a later one stops
        plan = Plan(tuple(specs), (trait,), seed=args.seed, max_new_tokens=args.max_new_tokens, sample=True)
        answers = generate_answers(lm, plan, {trait: questions[trait]}, out, args.batch_size, progress(), folder,
                                   world=world)
        judgments = judge_answers(judge, answers, out, progress=progress(), world=world)
        if not world.writer:  # rank 0 alone chooses and writes
            continue
        rows = pole_rows(joined(answers, judgments), Fluent())
        chosen = record_choices(folder, rows, settings)
        for r in rows:
            print(f"{trait:>17} {r['pole']:>4} {r['variant']:<22} win {r['win']:.2f}  toward {r['toward']:.3f}  "
                  f"rep4 {r['repeat4']:.3f}  d2 {r['distinct2']:.3f}  ppl {r['perplexity']:.1f}"
                  f"{'' if r['fluent'] else '  (not fluent)'}")
        print(f"{trait}: chosen {chosen}")
    return 0


# -- the parsers ----------------------------------------------------------------------------------------------------

def _source_option(p) -> None:
    p.add_argument("--source", default="generated", choices=("generated", "corpus"),
                   help="generated: persona-prompted answers (the paper); corpus: read the corpus's answers")


def _selection_options(p) -> None:
    from ..engine.generation import Decoding
    from ..npti.identify import Selection

    p.add_argument("--max-new-tokens", type=POSITIVE, default=Decoding.max_new_tokens)
    p.add_argument("--top-k", type=POSITIVE, default=Selection.top_k, help="neurons kept always (paper: 2000)")
    p.add_argument("--min-diff", type=MIN_DIFF, default=Selection.min_diff,
                   help="then keep while diff >= this (paper: 0.1)")


def _add_identify(sub) -> None:
    p = command(sub, "identify", cmd_identify, "find a trait's neurons")
    model_options(p)
    p.add_argument("--trait", required=True, type=TRAIT, choices=TRAITS)
    _source_option(p)
    p.add_argument("--questions", type=IN_FILE, default=None, help="PersonalityBench JSONL (--source generated)")
    p.add_argument("--descriptions", type=IN_FILE, default=None,
                   help='JSON {"high": [...], "low": [...]} or a persona bank file (--source generated)')
    p.add_argument("--corpus", type=IN_FILE, default=None,
                   help="corpus JSONL (--source corpus; default: the bank's train split)")
    p.add_argument("--out", type=OUT_FOLDER, required=True, help="folder for the two profiles and the answers")
    p.add_argument("--limit", type=POSITIVE, default=None, help="use only the first N questions")
    _selection_options(p)


def _add_build_profiles(sub) -> None:
    p = command(sub, "build-profiles", cmd_build_profiles, "identify every trait from the persona bank")
    model_options(p)
    traits_option(p)
    _source_option(p)
    shipped_out_options(p, "use only the first N search questions per trait")
    _selection_options(p)


def _add_sweep(sub) -> None:
    from ..engine.generation import Decoding

    p = command(sub, "sweep", cmd_sweep, "choose the NPTI and vector defaults by rule")
    model_options(p)
    p.set_defaults(batch_size=24)
    traits_option(p)
    p.add_argument("--methods", nargs="+", default=["npti", "vector"], choices=("npti", "vector"))
    p.add_argument("--profiles", type=OUT_FOLDER, default=None,
                   help="folder of profiles and vectors, where the choices are written (default: profiles/<model>/)")
    p.add_argument("--questions-per-trait", type=POSITIVE, default=None, help="default: every development question")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=Decoding.studio().max_new_tokens)
    p.add_argument("--out", type=OUT_FOLDER, required=True,
                   help="folder for the sweep's answers and judgments (resumable)")


def add_parser(sub) -> None:
    """identify, build-profiles and sweep."""
    for add in (_add_identify, _add_build_profiles, _add_sweep):
        add(sub)
