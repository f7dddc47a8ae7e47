"""Run every benchmark module (``bench/bench_*.py``), print figures, write JSON.

``python -m bench [name ...]`` runs only the named modules (e.g. ``protocol``).
"""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path

from bench.common import Results

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> int:
    names = sorted(f.stem for f in (ROOT / "bench").glob("bench_*.py"))
    if argv:
        names = [n for n in names if n.removeprefix("bench_") in argv]
    results = Results(ROOT / "bench-results.json")
    failed = []
    for name in names:
        print(f"# {name}", flush=True)
        try:
            importlib.import_module(f"bench.{name}").run(results)
        except Exception:
            traceback.print_exc()
            failed.append(name)
        results.write()
    print(f"# wrote {results.path}")
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
