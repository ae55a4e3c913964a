"""The commands that answer with the methods: `generate` (one method, one trait pole; --max-new-tokens defaults to
`Decoding`'s) and `evaluate` (the paper's table; its defaults are the evaluation `Plan`'s, its batch size
`generate_answers`')."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from ..traits import POLES, TRAITS, check_trait
from .common import (COUNT, IN_FILE, METHOD_SPEC, OUT_FILE, OUT_FOLDER, POSITIVE, PROFILES, STRENGTH,
                     STRENGTH_OR_DEFAULT, TRAIT, command, keyword_defaults, load, model_options, progress,
                     traits_option)


def _request(args):
    """generate's Request, checked before the model loads."""
    from ..methods.dispatch import Request

    return Request(args.method, args.trait, args.pole, args.strength, args.seed, args.top_neurons, args.source,
                   tuple(args.layers) if args.layers else None)


def cmd_generate(args) -> int:
    """Answer every question of a PersonalityBench JSONL file with one method for one trait pole, and write each
    line back with its "answer" and the parameters used. OUT is written once, at the end, and renamed into place:
    a failed run leaves an earlier file there as it was."""
    from ..engine.generation import Decoding
    from ..methods.dispatch import MethodUnavailable, answer, unavailable
    from ..methods.questions import read_questions, write_jsonl

    rows = read_questions(args.questions)
    request = _request(args)
    lm = load(args)
    profiles = Path(args.profiles) if args.profiles else None
    if request.layers:
        from ..methods.vector import check_layers

        check_layers(request.layers, lm.sites.n_layers)
    if why := unavailable(lm, request.method, request.trait, request.pole, profiles, request.source):
        raise MethodUnavailable(why)  # before any generation: one line, nothing written
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    out = []
    batches = [rows[i:i + args.batch_size] for i in range(0, len(rows), args.batch_size)]
    for batch in progress()(batches, desc=f"{args.method} {request.trait} {request.pole}"):
        answers, params = answer(lm, request, [r["question"] for r in batch], decoding, profiles, args.steer_prompt)
        picks = params.pop("descriptions", None)
        for i, (row, ans) in enumerate(zip(batch, answers)):
            extra = {"description": picks[i]} if picks else {}
            out.append({**row, "answer": ans.text, **params, **extra, "model": lm.name,
                        "max_new_tokens": args.max_new_tokens, "n_tokens": ans.n_tokens})
    write_jsonl(args.out, out)
    print(f"{args.out}: {len(out)} answers")
    return 0


def _questions_by_trait(path: str, traits: Sequence[str]) -> dict[str, list[str]]:
    """evaluate's --questions: a row with a "trait" counts for that trait only (refused by file and line when it
    names no Big Five trait), a row without for every trait."""
    from ..methods.questions import read_question_lines

    rows = []
    for n, row in read_question_lines(path):
        try:
            trait = check_trait(row["trait"]) if "trait" in row else None
        except ValueError as exc:
            raise ValueError(f'{path}:{n}: "trait": {exc}') from exc
        rows.append((trait, row["question"]))
    return {t: [q for trait, q in rows if trait in (None, t)] for t in traits}


def _evaluation_questions(args, traits: Sequence[str]) -> dict[str, list[str]]:
    """--questions (or each trait's development questions), the first --questions-per-trait of each trait; a trait
    left with none is refused."""
    from ..methods import bank

    if args.questions:
        questions = _questions_by_trait(args.questions, traits)
    else:
        questions = {t: bank.questions(t, "dev") for t in traits}
    questions = {t: q[: args.questions_per_trait] for t, q in questions.items()}
    if empty := [t for t, q in questions.items() if not q]:
        raise ValueError(f"no questions for {', '.join(empty)}" + (f" in {args.questions}" if args.questions else ""))
    return questions


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
    for every trait. Without --questions, each trait's development questions from the persona bank.

    Shared out over processes, unchanged: `torchrun --nproc-per-node N -m steering evaluate ...` (or accelerate
    launch): each process makes its share of the answers (and, with the offline judge, of the judgments); rank 0
    writes every file, holding what one process would write."""
    from ..evaluation.evaluate import Plan, generate_answers, joined, judge_answers, run_settings, write_outputs
    from ..engine.world import World
    from ..evaluation.judges import OfflineJudge, make_judge
    from ..fileio import write_text_atomic

    plan = Plan(tuple(args.methods), tuple(args.traits), tuple(args.strengths), args.seed, args.max_new_tokens,
                args.sample)
    questions = _evaluation_questions(args, plan.traits)
    out = Path(args.out)
    # the LLM judge is set up (its settings checked) before the model loads; the offline one needs the model
    judge = make_judge(args.judge, cache=out / "judge-cache.jsonl") if args.judge == "openai" else None
    lm = load(args)
    if judge is None:
        judge = make_judge(args.judge, lm)
    world = args.world
    answers = generate_answers(lm, plan, questions, out, args.batch_size, progress(),
                               Path(args.profiles) if args.profiles else None, world=world)
    if not isinstance(judge, OfflineJudge):  # an endpoint's judge is asked from rank 0 alone (one reply cache)
        if not world.writer:
            return 0
        world = World()
    if world.writer:
        settings = run_settings(plan, lm.name, judge, questions, answers)
        write_text_atomic(out / "run.json", json.dumps(settings, indent=1) + "\n")
    judgments = judge_answers(judge, answers, out, progress=progress(), world=world)
    if not world.writer:
        return 0
    table = write_outputs(joined(answers, judgments), out, judge.name, judge.scales.describe())
    print((out / "table.md").read_text())
    print((out / "pairs.md").read_text())
    print(f"{out}: {len(answers)} answers, {len(judgments)} judgments by {judge.name}, table of {len(table)} rows")
    return 0


# -- the parsers ----------------------------------------------------------------------------------------------------

def _add_generate(sub) -> None:
    from ..engine.generation import Decoding
    from ..methods.dispatch import METHODS

    p = command(sub, "generate", cmd_generate, "answer questions with one method")
    model_options(p)
    p.add_argument("--questions", type=IN_FILE, required=True, help="PersonalityBench JSONL")
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--trait", required=True, type=TRAIT, choices=TRAITS)
    p.add_argument("--pole", required=True, choices=POLES)
    p.add_argument("--strength", type=STRENGTH, default=None,
                   help="NPTI or vector strength, 0 to 4 (default: the shipped one)")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=Decoding.max_new_tokens)
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
    from ..evaluation.evaluate import Plan, generate_answers

    p = command(sub, "evaluate", cmd_evaluate, "the paper's table: generate, judge, tabulate")
    model_options(p)
    p.set_defaults(batch_size=keyword_defaults(generate_answers)["batch_size"], seed=Plan.seed)
    p.add_argument("--questions", type=IN_FILE, default=None,
                   help="PersonalityBench JSONL (default: the bank's dev questions)")
    p.add_argument("--questions-per-trait", type=POSITIVE, default=None, help="use only the first N per trait")
    p.add_argument("--methods", nargs="+", type=METHOD_SPEC, default=list(Plan.methods),
                   help="method specs method[@source][:strength][/layers], e.g. base p2 sft@persona npti@corpus:1.5 "
                        "vector:0.05/14,15,16; what a spec leaves out is the shipped default")
    traits_option(p)
    p.add_argument("--sample", action="store_true", default=Plan.sample,
                   help="decode as the studio does (temperature 0.7, top-p 0.9; seeded per question) instead of greedy")
    p.add_argument("--strengths", nargs="+", type=STRENGTH_OR_DEFAULT, default=list(Plan.strengths),
                   help="NPTI strengths, numbers in [0, 4] or 'default' (the shipped one)")
    p.add_argument("--judge", choices=("offline", "openai"), default="offline")
    p.add_argument("--max-new-tokens", type=POSITIVE, default=Plan.max_new_tokens)
    p.add_argument("--profiles", type=PROFILES, default=None,
                   help="folder of NPTI profiles and adapters (default: profiles/<model>/)")
    p.add_argument("--out", type=OUT_FOLDER, required=True)


def add_parser(sub) -> None:
    """generate and evaluate."""
    for add in (_add_generate, _add_evaluate):
        add(sub)
