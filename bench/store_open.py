"""Opening a fresh in-memory Store (every Alembic revision run, in its migration lock) versus creating the same
schema directly with SQLAlchemy's `create_all`, in one process, interleaved, medians. The test suite opens hundreds
of fresh stores, so this cost is paid many times over.

Target: opening a store <= 10x `create_all` (and well under 50 ms on this project's 2-core machines).

    python bench/store_open.py [--repeats 30]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import create_engine  # noqa: E402

from _common import interleaved  # noqa: E402
from db import Store  # noqa: E402
from db.schema import Base  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()

    def store() -> None:
        Store("sqlite://").close()

    def create_all() -> None:
        engine = create_engine("sqlite://")
        Base.metadata.create_all(engine)
        engine.dispose()

    med = interleaved({"Store": store, "create_all": create_all}, args.repeats)
    for name, sec in med.items():
        print(f"{name:>10}: {sec * 1000:6.1f} ms (median of {args.repeats})")
    print(f"opening a store / create_all: {med['Store'] / med['create_all']:.2f} (target <= 10)")


if __name__ == "__main__":
    main()
