"""What every command shares: the parser that refuses bad input on one line, the option types (each a check that
names what is wrong), the model options, the helpers the commands load a model and show progress with, and the
one-line error handling of `main`.

Option defaults come from the library: the model options from `load_model`'s keyword defaults, the engine's batch
size and seed from `identify`'s (the other engine functions share them), the rest from the dataclasses each
command module names next to its options."""

from __future__ import annotations

import argparse
import inspect
import math
import sys
from pathlib import Path
from typing import Callable, NoReturn

from ..fileio import check_input_file, check_input_folder, check_output_file, check_output_folder
from ..traits import TRAITS, check_trait

SHARDED = ("identify", "build-profiles", "sweep", "evaluate")  # the commands that run under torchrun or accelerate
MAX_SEED = 2**31  # seeds must be 0 <= seed < 2**31: what every seeded generator here accepts


# -- the parser ---------------------------------------------------------------------------------------------------

class _Once(argparse.Action):
    """Store an option's value, refusing the option given twice with different values (argparse would keep the
    last one without a word: `--trait Openness ... --trait Neuroticism` would quietly run Neuroticism)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        given = namespace.__dict__.setdefault("_given", {})
        if self.dest in given and given[self.dest] != values:
            raise argparse.ArgumentError(self, f"given twice, as {given[self.dest]!r} and {values!r}")
        given[self.dest] = values
        setattr(namespace, self.dest, values)


class Parser(argparse.ArgumentParser):
    """argparse with each refusal on one line, `error: argument --x: ...` (exit 2), not a usage block and a line,
    and with an option given twice with different values refused."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register("action", None, _Once)
        self.register("action", "store", _Once)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message}\n")


def command(sub, name: str, func: Callable, summary: str) -> argparse.ArgumentParser:
    """A sub-command whose help is its function's docstring."""
    p = sub.add_parser(name, help=summary, description=inspect.cleandoc(func.__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


# -- the option types ---------------------------------------------------------------------------------------------

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


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a whole number, got {text!r}") from None


def _whole(text: str, low: int = 1) -> int:
    value = _integer(text)
    if value < low:
        raise ValueError(f"must be at least {low}, got {value}")
    return value


def _seed(text: str) -> int:
    value = _integer(text)
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
    from ..npti.induce import check_strength

    return check_strength(_number(text))


def _strength_or_default(text: str) -> float | None:
    return None if text == "default" else _strength(text)


def _method_spec(text: str) -> str:
    from ..evaluation.evaluate import Variant

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


# -- the common options -------------------------------------------------------------------------------------------

def keyword_defaults(func: Callable) -> dict[str, object]:
    """A library function's keyword defaults, by name: where the CLI takes a default no dataclass holds."""
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def model_options(p: argparse.ArgumentParser) -> None:
    """--model, --quantization, --device, --neuron-module (`load_model`'s defaults), --batch-size and --seed (the
    engine's: `identify`'s)."""
    from ..engine.models import QUANTIZATIONS, load_model
    from ..npti.identify import identify

    loading, engine = keyword_defaults(load_model), keyword_defaults(identify)
    p.add_argument("--model", default=loading["name"],
                   help="'default' (embedded SmolLM2-135M-Instruct), a hub id, a local folder or a .gguf file")
    p.add_argument("--quantization", default=loading["quantization"], choices=QUANTIZATIONS,
                   help="default: nf4 on a CUDA device, bf16 on a CPU")
    p.add_argument("--device", default=loading["device"], choices=("auto", "cpu", "cuda"))
    p.add_argument("--neuron-module", default=loading["neuron_module"],
                   help="activation module path with {} for the layer, for architectures not recognised")
    p.add_argument("--batch-size", type=POSITIVE, default=engine["batch_size"])
    p.add_argument("--seed", type=SEED, default=engine["seed"], help="0 <= seed < 2**31")


def traits_option(p: argparse.ArgumentParser) -> None:
    """--traits, every trait by default."""
    p.add_argument("--traits", nargs="+", type=TRAIT, default=list(TRAITS), choices=TRAITS)


def shipped_out_options(p: argparse.ArgumentParser, limit_help: str) -> None:
    """--out, a folder by default the model's shipped one, and --limit."""
    p.add_argument("--out", type=OUT_FOLDER, default=None, help="folder (default: profiles/<model>/)")
    p.add_argument("--limit", type=POSITIVE, default=None, help=limit_help)


# -- what the commands share ----------------------------------------------------------------------------------------

def progress():
    from tqdm.auto import tqdm

    return tqdm


def load(args):
    """The model the model options name."""
    from ..engine.models import load_model

    return load_model(args.model, quantization=args.quantization, device=args.device,
                      neuron_module=args.neuron_module)


def out_folder(given: str | None, lm) -> Path:
    """--out, or where the model's shipped profiles live (checked now, before anything is computed)."""
    from ..methods.dispatch import profiles_dir

    return Path(given) if given else check_output_folder(profiles_dir(lm))


def one_line(exc: BaseException) -> str:
    """An error as one line: an OSError as `FILE: reason`, anything else its message with line breaks folded."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; bad input that only the command can see (a missing artefact, a model that does not
    load, a bad profile or line, an unreadable file) is one line on stderr and exit status 2. Started by a launcher
    (torchrun, accelerate launch) as one of several processes, the command joins their process group first
    (`engine.world.launched`) and finds it as `args.world`; only the SHARDED commands accept that."""
    from ..engine.models import ModelLoadError
    from ..engine.world import launched
    from ..methods.dispatch import MethodUnavailable
    from ..npti.profile import ProfileError

    try:
        with launched(getattr(args, "device", "auto")) as world:
            if world.size > 1 and args.command not in SHARDED:
                raise ValueError(f"{args.command} runs in one process: start it without a launcher "
                                 f"({', '.join(SHARDED)} can be shared out over processes)")
            args.world = world
            return args.func(args)
    except (MethodUnavailable, ModelLoadError, ProfileError, ValueError, OSError) as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        return 2
