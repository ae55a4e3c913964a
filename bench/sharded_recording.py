"""Identification's recording throughput shared out over 2 processes versus 1, on this machine's CPU cores.

The same identification (one trait, the first --questions search questions of the persona bank, both poles,
greedy, --max-new-tokens, batches of --batch) is run three ways, one after another, each in fresh processes:

  1 process, every core's threads (torch's default: what a plain `python -m steering identify` uses)
  1 process, 1 thread
  2 processes of 1 thread each, started by torchrun (gloo), each taking its share of the batches

Throughput is recorded tokens (the generated positions counted, both poles) per second of identification, model
loading left out; in the sharded run the clock runs from a barrier after loading to the end of the all-reduce, on
rank 0. The ratios are printed; the runs make the same batches, so they count the same tokens (checked).

    python bench/sharded_recording.py [--questions 32] [--max-new-tokens 48] [--batch 4] [--trait Extraversion]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def worker(args) -> None:
    import torch

    from steering import load_model
    from steering.engine.generation import Decoding
    from steering.engine.world import launched
    from steering.methods import bank
    from steering.npti.identify import identify

    with launched("cpu") as world:
        lm = load_model("default")
        trait = bank.TraitBank.load(args.trait)
        questions = bank.questions(trait.trait, "search")[: args.questions]
        if world.size > 1:
            import torch.distributed as dist

            dist.barrier()
        start = time.perf_counter()
        result = identify(lm, trait.trait, questions, trait.descriptions, batch_size=args.batch, world=world,
                          decoding=Decoding(max_new_tokens=args.max_new_tokens))
        seconds = time.perf_counter() - start
        if world.writer:
            tokens = result.high.meta["tokens"] + result.low.meta["tokens"]
            print("RESULT " + json.dumps({"processes": world.size, "threads": torch.get_num_threads(),
                                          "tokens": tokens, "seconds": seconds}), flush=True)


def run(command: list[str], threads: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--trait", default="Extraversion")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    me = [str(Path(__file__).resolve()), "--worker", "--questions", str(args.questions), "--max-new-tokens",
          str(args.max_new_tokens), "--batch", str(args.batch), "--trait", args.trait]
    runs = {
        f"1 process, {cores} threads": run([sys.executable, *me], cores),
        "1 process, 1 thread": run([sys.executable, *me], 1),
        "2 processes, 1 thread each": run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                                           "--nproc-per-node=2", *me], 1),
    }
    import torch

    print(f"# identification of {args.trait}, {args.questions} questions x 2 poles, greedy, {args.max_new_tokens} new "
          f"tokens, batches of {args.batch}; SmolLM2-135M-Instruct bf16; {cores} CPU cores; torch {torch.__version__}")
    tokens = {r["tokens"] for r in runs.values()}
    if len(tokens) != 1:
        sys.exit(f"the runs counted different tokens: {tokens}")
    for name, r in runs.items():
        print(f"{name:>28}: {r['tokens'] / r['seconds']:7.1f} recorded tokens/s ({r['tokens']} tokens, "
              f"{r['seconds']:.1f} s)")
    rate = {name: r["tokens"] / r["seconds"] for name, r in runs.items()}
    two = rate["2 processes, 1 thread each"]
    print(f"2 processes / 1 process of 1 thread: {two / rate['1 process, 1 thread']:.2f}x (ideal 2x)")
    print(f"2 processes / 1 process of {cores} threads: {two / rate[f'1 process, {cores} threads']:.2f}x")


if __name__ == "__main__":
    main()
