"""How long `python app.py` takes to answer, cold (a fresh data home: the packaged model is converted first) and
warm (converted model cached), and how long a blind round takes through the JSON API (full form: every method,
up to the app's 96 tokens, sampled), on the default model as the app loads it. What a Space owner sees at start.

    python bench/app_start.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as r:
        return json.loads(r.read())


def start(home: Path, port: int) -> tuple[subprocess.Popen, float]:
    """Start the app; return it and the seconds until its main page answers."""
    env = {**os.environ, "PERSONA_STUDIO_HOME": str(home), "PERSONA_STUDIO_PORT": str(port)}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5):
                return proc, time.perf_counter() - began
        except OSError:
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        proc, cold = start(home, _port())
        proc.terminate()
        proc.wait(30)
        port = _port()
        proc, warm = start(home, port)
        try:
            base = f"http://127.0.0.1:{port}"
            rater = _post(base + "/api/raters", {})["rater"]
            times = []
            for _ in range(args.rounds):
                began = time.perf_counter()
                r = _post(base + "/api/blind/rounds", {"rater": rater, "trait": "Extraversion", "pole": "low"})
                times.append(time.perf_counter() - began)
                _post(f"{base}/api/blind/rounds/{r['round']}/rating", {
                    "rater": rater, "best": 0,
                    "scores": {str(a["slot"]): {"trait": 3, "fluency": 3} for a in r["answers"]}})
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"start to first page: cold {cold:.1f} s (the packaged model converted first), warm {warm:.1f} s")
    print(f"blind round, {len(r['answers'])} methods in one batch: median {statistics.median(times):.1f} s "
          f"over {args.rounds} (max {max(times):.1f} s)")


if __name__ == "__main__":
    main()
