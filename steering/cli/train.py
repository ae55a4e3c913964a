"""The commands that train the other methods and the judge: `finetune` (the LoRA baseline; its options default to
`Training`'s fields, or `CORPUS_TRAINING`'s with --data corpus), `build-vectors`, `fit-judge` and `judge-check`."""

from __future__ import annotations

from pathlib import Path

from ..traits import POLES, TRAITS
from .common import (COUNT, IN_FILE, IN_FOLDER, LEARNING_RATE, OUT_FILE, POSITIVE, TRAIT, command, load, model_options,
                     out_folder, progress, shipped_out_options, traits_option)

# finetune's options that override a field of `Training` of the same name when given
_TRAINING_OPTIONS = ("rank", "alpha", "learning_rate", "epochs", "max_answer_tokens", "top_layers", "batch_size")


def _training(args):
    """The Training of `finetune`: the data source's defaults, overridden by what the command line gave."""
    from dataclasses import replace

    from ..methods.finetune import CORPUS_TRAINING, Training

    base = CORPUS_TRAINING if args.data == "corpus" else Training()
    given = {name: getattr(args, name) for name in _TRAINING_OPTIONS}
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
    from ..build import record_adapter
    from ..methods.dispatch import adapter_folder, profiles_dir
    from ..methods.finetune import corpus_pairs, finetune, training_pairs

    training = _training(args)
    traits = args.trait or list(TRAITS)
    poles = [args.pole] if args.pole else list(POLES)
    lm = load(args)
    out = out_folder(args.out, lm)
    for trait in traits:
        answers = Path(args.answers) if args.answers else profiles_dir(lm) / "answers" / f"{trait}.jsonl"
        for pole in poles:
            if args.data == "corpus":
                pairs = corpus_pairs(trait, pole)[: args.limit]
            else:
                pairs = training_pairs(answers, trait, pole)[: args.limit]
            folder = adapter_folder(lm, trait, pole, args.data, out)
            card = finetune(lm, pairs, training, folder, trait, pole, progress=progress(), data=args.data)
            record_adapter(out, card, args.data)
            print(f"{folder}: {card.examples} examples, {card.steps} steps, final loss {card.final_loss:.3f}, "
                  f"{card.seconds:.0f} s, {card.size_bytes / 1e6:.1f} MB")
    return 0


def cmd_build_vectors(args) -> int:
    """Build each trait's activation vector for a model: the mean residual stream over the answer tokens of the
    corpus's high-pole answers minus that of its low-pole answers (train split, read with teacher forcing), per
    layer, with the layer's typical residual norm and the read-out layer (the one whose per-answer projections
    separate the poles best on train). Writes profiles/<model>/<Trait>.vector.safetensors and .json."""
    from ..build import build_vectors

    lm = load(args)
    folder = out_folder(args.out, lm)
    manifest = build_vectors(lm, folder, args.traits, batch_size=args.batch_size, limit=args.limit,
                             progress=progress())
    for trait in args.traits:
        entry = manifest["vectors"][trait]
        print(f"{trait}: read-out layer {entry['readout_layer']} (d = {max(entry['separation_d']):.2f}), "
              f"steering layers {entry['layers']}, {entry['seconds']:.0f} s")
    return 0


def cmd_fit_judge(args) -> int:
    """Fit the offline trait judge: per trait, a logistic regression on all-MiniLM-L6-v2 sentence embeddings of the
    corpus's train-split answers (high = 1, low = 0), its regularisation chosen by 5-fold cross-validation on train.
    Writes profiles/judge/trait_judge.json (or --out) with its training card (data size, dev AUC, date, versions)."""
    from ..evaluation.traitjudge import fit_trait_judge

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
    from ..evaluation.traitjudge import TraitJudge, check_judge

    judge = TraitJudge.load(args.judge)
    rows = check_judge(judge, Path(args.answers) if args.answers else None)
    for row in rows:
        persona = "nan" if row["persona_auc"] is None else f"{row['persona_auc']:.3f}"
        print(f"{row['trait']} dev_auc={row['dev_auc']:.3f} extra_auc={row['extra_auc']:.3f} "
              f"persona_auc={persona} n={row['n']}")
    print(f"mean dev_auc={sum(r['dev_auc'] for r in rows) / len(rows):.3f}")
    return 0


# -- the parsers ----------------------------------------------------------------------------------------------------

def _training_options(p) -> None:
    """finetune's Training options: None (not given) keeps the data source's default, named in the help."""
    from ..methods.finetune import CORPUS_TRAINING, Training

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


def _add_finetune(sub) -> None:
    p = command(sub, "finetune", cmd_finetune, "train the LoRA baseline")
    model_options(p)
    p.set_defaults(quantization="none", batch_size=None)  # no batch size given: the Training's
    p.add_argument("--trait", nargs="+", type=TRAIT, default=None, choices=TRAITS, help="default: every trait")
    p.add_argument("--pole", default=None, choices=POLES, help="default: both")
    p.add_argument("--data", default="corpus", choices=("corpus", "persona"),
                   help="corpus: the corpus's train split; persona: the persona-prompted answers")
    p.add_argument("--answers", type=IN_FILE, default=None,
                   help="persona-prompted answers JSONL (--data persona; default: shipped)")
    shipped_out_options(p, "train on the first N answers only")
    _training_options(p)


def _add_build_vectors(sub) -> None:
    p = command(sub, "build-vectors", cmd_build_vectors, "build each trait's activation vector from the corpus")
    model_options(p)
    traits_option(p)
    shipped_out_options(p, "use only the first N train pairs per trait")


def _add_judge_commands(sub) -> None:
    p = command(sub, "fit-judge", cmd_fit_judge, "fit the offline trait judge on the corpus")
    traits_option(p)
    p.add_argument("--out", type=OUT_FILE, default=None, help="judge file (default: profiles/judge/trait_judge.json)")

    p = command(sub, "judge-check", cmd_judge_check, "AUCs of the shipped offline trait judge")
    p.add_argument("--judge", type=IN_FILE, default=None, help="judge file (default: profiles/judge/trait_judge.json)")
    p.add_argument("--answers", type=IN_FOLDER, default=None,
                   help="folder of persona-prompted answers <Trait>.jsonl (default: the default model's)")


def add_parser(sub) -> None:
    """finetune, build-vectors, fit-judge and judge-check."""
    for add in (_add_finetune, _add_build_vectors, _add_judge_commands):
        add(sub)
