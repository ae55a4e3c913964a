"""The command line: a thin layer over the library. Each command's help is its function's docstring."""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

from .traits import POLES, TRAITS


def _progress():
    from tqdm.auto import tqdm

    return tqdm


def _load(args):
    from .models import load_model

    return load_model(args.model, quantization=args.quantization, device=args.device,
                      neuron_module=args.neuron_module)


def cmd_identify(args) -> int:
    """Identify a trait's neurons on a model: answer every question under a random high-pole and a random
    low-pole persona description, record neuron activity over the generated tokens, and keep the neurons whose
    firing differs most between the poles. Writes OUT/<Trait>_high.json, OUT/<Trait>_low.json and the
    persona-prompted answers to OUT/answers/<Trait>.jsonl.

    --descriptions is a JSON file {"high": ["You are ...", ...], "low": [...]}."""
    from .generation import Decoding
    from .identify import Selection, identify
    from .questions import read_questions
    from .record import Bins

    questions = [row["question"] for row in read_questions(args.questions)][: args.limit]
    try:
        descriptions = json.loads(Path(args.descriptions).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{args.descriptions}: not a readable JSON file of descriptions ({exc})") from exc
    if not isinstance(descriptions, dict) or not all(isinstance(descriptions.get(p), list) for p in POLES):
        raise ValueError(f'{args.descriptions}: expected {{"high": [...], "low": [...]}}')
    lm = _load(args)
    out = Path(args.out)
    answers = out / "answers" / f"{args.trait}.jsonl"
    answers.parent.mkdir(parents=True, exist_ok=True)
    answers.unlink(missing_ok=True)
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
    """Build a model's shipped NPTI profiles from the persona bank: identification on every trait's search
    questions, writing profiles/<model>/<Trait>_<pole>.json, the persona-prompted answers under answers/ and a
    manifest.json that records this command, the counts, neurons per pole and per layer, and timings."""
    from .build import build_profiles
    from .generation import Decoding
    from .identify import Selection
    from .methods import profiles_dir

    lm = _load(args)
    folder = Path(args.out) if args.out else profiles_dir(lm)
    manifest = build_profiles(lm, folder, args.traits, decoding=Decoding(max_new_tokens=args.max_new_tokens),
                              batch_size=args.batch_size, seed=args.seed, selection=Selection(args.top_k, args.min_diff),
                              limit=args.limit, progress=_progress())
    for trait in args.traits:
        entry = manifest["traits"][trait]
        print(f"{trait}: {entry['high']['neurons']} high / {entry['low']['neurons']} low neurons, "
              f"{entry['seconds']:.0f} s")
    print(f"{folder / 'manifest.json'}")
    return 0


def cmd_sweep(args) -> int:
    """Sweep NPTI strengths per trait pole on the bank's development questions, measure the offline trait proxy
    and fluency (repeated 4-gram share, distinct-2, perplexity under the unsteered model), and record the table
    and each pole's default strength (the strongest one that stays fluent) in the manifest and the profiles."""
    from . import bank
    from .build import record_sweep
    from .generation import Decoding
    from .methods import profiles_dir
    from .proxy import TraitProxy
    from .sweep import Fluent, choose_defaults, sweep_trait

    lm = _load(args)
    folder = Path(args.profiles) if args.profiles else profiles_dir(lm)
    proxy = TraitProxy()
    settings = {"command": " ".join(["python -m steering"] + sys.argv[1:]), "questions": args.questions_per_trait,
                "strengths": args.strengths, "max_new_tokens": args.max_new_tokens, "seed": args.seed,
                "fluent_rule": Fluent().__dict__}
    for trait in args.traits:
        questions = bank.questions(trait, "dev")[: args.questions_per_trait]
        table = sweep_trait(lm, proxy, trait, questions, strengths=args.strengths,
                            decoding=Decoding(max_new_tokens=args.max_new_tokens), batch_size=args.batch_size,
                            seed=args.seed, profiles=folder, top=args.top_neurons or None, progress=_progress())
        defaults = choose_defaults(table)
        record_sweep(folder, trait, table, defaults, settings, top=args.top_neurons or None)
        for row in table:
            print(f"{trait:>17} {row['pole']:>4} {row['strength']:4.2f}  proxy {row['proxy']:+.3f}  "
                  f"rep4 {row['repeat4']:.3f}  d2 {row['distinct2']:.3f}  ppl {row['perplexity']:.1f}")
        print(f"{trait}: default strengths {defaults}")
    return 0


def cmd_finetune(args) -> int:
    """Train the fine-tuned baseline: one LoRA adapter per trait pole, by supervised fine-tuning on (plain
    question -> the answer the model gave under that pole's persona prompt). The answers come from
    identification (profiles/<model>/answers/<Trait>.jsonl, or --answers FILE). Each adapter goes to
    OUT/adapters/<Trait>_<pole>/ with training.json and loss.csv, and gets an entry in OUT/manifest.json.

    On a CPU the base model is trained in float32 (--quantization none, the default here); on a CUDA device
    --quantization nf4 trains QLoRA."""
    from .build import record_adapter
    from .finetune import Training, finetune, training_pairs
    from .methods import profiles_dir

    training = Training(rank=args.rank, alpha=args.alpha, learning_rate=args.learning_rate, epochs=args.epochs,
                        batch_size=args.batch_size, max_answer_tokens=args.max_answer_tokens, seed=args.seed, top_layers=args.top_layers or None,
                        targets=None if not args.targets or args.targets == ["none"] else tuple(args.targets))
    traits = args.trait or list(TRAITS)
    poles = [args.pole] if args.pole else list(POLES)
    lm = _load(args)
    out = Path(args.out) if args.out else profiles_dir(lm)
    for trait in traits:
        answers = Path(args.answers) if args.answers else profiles_dir(lm) / "answers" / f"{trait}.jsonl"
        for pole in poles:
            pairs = training_pairs(answers, trait, pole)[: args.limit]
            folder = out / "adapters" / f"{trait}_{pole}"
            card = finetune(lm, pairs, training, folder, trait, pole, progress=_progress())
            record_adapter(out, card)
            print(f"{folder}: {card.examples} examples, {card.steps} steps, final loss {card.final_loss:.3f}, "
                  f"{card.seconds:.0f} s, {card.size_bytes / 1e6:.1f} MB")
    return 0


def cmd_generate(args) -> int:
    """Answer every question of a PersonalityBench JSONL file with one method for one trait pole, and write each
    line back with its "answer" and the parameters used."""
    from .generation import Decoding
    from .methods import Request, answer
    from .questions import read_questions, write_jsonl

    rows = read_questions(args.questions)
    request = Request(args.method, args.trait, args.pole, args.strength, args.seed, args.top_neurons)
    lm = _load(args)
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    out = []
    batches = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    for batch in _progress()(batches, desc=f"{args.method} {request.trait} {request.pole}"):
        answers, params = answer(lm, request, [r["question"] for r in batch], decoding,
                                 Path(args.profiles) if args.profiles else None, args.steer_prompt)
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

    --judge offline needs no API: a PROXY of both scores (persona-bank embedding proxy for the trait, perplexity x
    repetition for fluency), labelled as such in every output. --judge openai uses any OpenAI-compatible endpoint
    from the environment: PERSONA_STUDIO_JUDGE_BASE_URL (or OPENAI_BASE_URL), PERSONA_STUDIO_JUDGE_MODEL,
    PERSONA_STUDIO_JUDGE_API_KEY (or OPENAI_API_KEY); replies are cached in OUT/judge-cache.jsonl.

    --questions is a PersonalityBench JSONL file; rows with a "trait" field count for that trait only, rows without
    for every trait. Without --questions, each trait's development questions from the persona bank."""
    from . import bank
    from .evaluate import OfflineJudge, Plan, generate_answers, joined, judge_answers, judge_scales, run_settings, \
        write_outputs
    from .questions import read_questions

    strengths = tuple(None if s == "default" else float(s) for s in args.strengths)
    plan = Plan(tuple(args.methods), tuple(args.traits), strengths, args.seed, args.max_new_tokens)
    if args.questions:
        rows = read_questions(args.questions)
        questions = {t: [r["question"] for r in rows if r.get("trait", t).strip().lower() == t.lower()]
                     for t in plan.traits}
    else:
        questions = {t: bank.questions(t, "dev") for t in plan.traits}
    questions = {t: q[: args.questions_per_trait] for t, q in questions.items()}
    if empty := [t for t, q in questions.items() if not q]:
        raise ValueError(f"no questions for {', '.join(empty)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.judge == "openai":
        from .judge import JudgeSettings, OpenAIJudge

        judge = OpenAIJudge(JudgeSettings.from_env(cache=out / "judge-cache.jsonl"))
    lm = _load(args)
    if args.judge == "offline":
        judge = OfflineJudge(lm)
    (out / "run.json").write_text(json.dumps(run_settings(plan, lm.name, judge, questions), indent=1) + "\n")
    answers = generate_answers(lm, plan, questions, out, args.batch_size, _progress(),
                               Path(args.profiles) if args.profiles else None)
    judgments = judge_answers(judge, answers, out, progress=_progress())
    table = write_outputs(joined(answers, judgments), out, judge.name, judge_scales(judge))
    print((out / "table.md").read_text())
    print(f"{out}: {len(answers)} answers, {len(judgments)} judgments by {judge.name}, table of {len(table)} rows")
    return 0


def _model_args(p: argparse.ArgumentParser) -> None:
    from .models import QUANTIZATIONS

    p.add_argument("--model", default="default",
                   help="'default' (embedded SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file")
    p.add_argument("--quantization", default="nf4", choices=QUANTIZATIONS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--neuron-module", default=None,
                   help="activation module path with {} for the layer, for architectures not recognised")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)


def _identify_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--top-k", type=int, default=2000, help="neurons kept always (paper: 2000)")
    p.add_argument("--min-diff", type=float, default=0.1, help="then keep while diff >= this (paper: 0.1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m steering", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser("identify", help="find a trait's neurons", description=inspect.cleandoc(cmd_identify.__doc__),
                       formatter_class=fmt)
    _model_args(p)
    p.add_argument("--trait", required=True, choices=TRAITS)
    p.add_argument("--questions", required=True, help="PersonalityBench JSONL")
    p.add_argument("--descriptions", required=True, help='JSON {"high": [...], "low": [...]}')
    p.add_argument("--out", required=True, help="folder for the two profiles and the answers")
    p.add_argument("--limit", type=int, default=None, help="use only the first N questions")
    _identify_args(p)
    p.set_defaults(func=cmd_identify)

    p = sub.add_parser("build-profiles", help="identify every trait from the persona bank",
                       description=inspect.cleandoc(cmd_build_profiles.__doc__), formatter_class=fmt)
    _model_args(p)
    p.add_argument("--traits", nargs="+", default=list(TRAITS), choices=TRAITS)
    p.add_argument("--out", default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N search questions per trait")
    _identify_args(p)
    p.set_defaults(func=cmd_build_profiles)

    from .sweep import STRENGTHS

    p = sub.add_parser("sweep", help="choose default NPTI strengths", description=inspect.cleandoc(cmd_sweep.__doc__),
                       formatter_class=fmt)
    _model_args(p)
    p.set_defaults(batch_size=16)
    p.add_argument("--traits", nargs="+", default=list(TRAITS), choices=TRAITS)
    p.add_argument("--profiles", default=None, help="folder of NPTI profiles (default: profiles/<model>/)")
    p.add_argument("--questions-per-trait", type=int, default=None, help="default: every development question")
    p.add_argument("--strengths", nargs="+", type=float, default=list(STRENGTHS))
    p.add_argument("--max-new-tokens", type=int, default=96)
    p.add_argument("--top-neurons", type=int, default=0,
                   help="sweep the fewer-neurons variant (each pole's N neurons of largest diff); 0: the paper's method")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("finetune", help="train the LoRA baseline", description=inspect.cleandoc(cmd_finetune.__doc__),
                       formatter_class=fmt)
    _model_args(p)
    p.set_defaults(quantization="none")
    p.add_argument("--trait", nargs="+", default=None, choices=TRAITS, help="default: every trait")
    p.add_argument("--pole", default=None, choices=POLES, help="default: both")
    p.add_argument("--answers", default=None, help="persona-prompted answers JSONL (default: the shipped ones)")
    p.add_argument("--out", default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=int, default=None, help="train on the first N answers only")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--targets", nargs="+", default=["q_proj", "v_proj"],
                   help="module names to adapt (peft's default for the architecture if given as none)")
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-answer-tokens", type=int, default=64)
    p.add_argument("--top-layers", type=int, default=15, help="adapt only the last N layers (0: every layer)")
    p.set_defaults(func=cmd_finetune)

    from .methods import METHODS

    p = sub.add_parser("generate", help="answer questions with one method", description=inspect.cleandoc(cmd_generate.__doc__),
                       formatter_class=fmt)
    _model_args(p)
    p.add_argument("--questions", required=True, help="PersonalityBench JSONL")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--trait", required=True, choices=TRAITS)
    p.add_argument("--pole", required=True, choices=POLES)
    p.add_argument("--strength", type=float, default=None, help="NPTI strength (default: the profile's)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--profiles", default=None, help="folder of NPTI profiles (default: profiles/<model>/)")
    p.add_argument("--steer-prompt", action="store_true", help="NPTI: steer the prompt pass too")
    p.add_argument("--top-neurons", type=int, default=None,
                   help="NPTI: use each pole's N neurons of largest diff (0: all, the paper's method; "
                        "default: the profile's shipped choice)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("evaluate", help="the paper's table: generate, judge, tabulate",
                       description=inspect.cleandoc(cmd_evaluate.__doc__), formatter_class=fmt)
    _model_args(p)
    p.set_defaults(batch_size=16)
    p.add_argument("--questions", default=None, help="PersonalityBench JSONL (default: the bank's dev questions)")
    p.add_argument("--questions-per-trait", type=int, default=None, help="use only the first N per trait")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    p.add_argument("--traits", nargs="+", default=list(TRAITS), choices=TRAITS)
    p.add_argument("--strengths", nargs="+", default=["default"],
                   help="NPTI strengths, numbers in [0, 4] or 'default' (the shipped one)")
    p.add_argument("--judge", choices=("offline", "openai"), default="offline")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--profiles", default=None, help="folder of NPTI profiles and adapters (default: profiles/<model>/)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .methods import MethodUnavailable
    from .models import ModelLoadError
    from .profile import ProfileError

    try:
        return args.func(args)
    except (MethodUnavailable, ModelLoadError, ProfileError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
