"""Wall time of `mlmm demo` (what `make demo` runs) before and after, back to back in one run.

    python benchmarks/demo_wall_time.py --before-src /tmp/mlmm-before/src [--after-src src] [--out /tmp/demo-timing]

``--before-src``: the ``src`` folder of a checkout of the earlier commit (e.g. ``git worktree add
/tmp/mlmm-before <commit>``). Both runs are the real command line, ``mlmm demo --out DIR --no-progress``
with its defaults, in fresh processes with the same environment; only the sources differ. The machine's
load average is printed before and after (on a shared machine it moves both figures).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1] / "src"


def timed(src: Path, out: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("OMP_NUM_THREADS", None)  # as `make demo` runs it: torch picks its own thread count
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mlmm.cli", "demo", "--out", str(out), "--no-progress"], env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"demo from {src} failed: {done.stderr[-2000:]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--before-src", required=True, type=Path)
    p.add_argument("--after-src", default=HERE, type=Path, help="default: this checkout's src")
    p.add_argument("--out", default="/tmp/demo-timing", type=Path)
    args = p.parse_args()
    figures = {"load_before": os.getloadavg(), "cores": os.cpu_count()}
    for name, src in (("before", args.before_src), ("after", args.after_src)):
        out = args.out / name
        if (out / "results.jsonl").exists():
            (out / "results.jsonl").unlink()  # a fresh run, not a resume
        figures[f"{name}_seconds"] = timed(src, out)
        print(f"{name}: {figures[f'{name}_seconds']:.0f} s", flush=True)
    figures["load_after"] = os.getloadavg()
    figures["ratio"] = figures["before_seconds"] / figures["after_seconds"]
    a = json.loads((args.out / "before" / "results.json").read_text())
    b = json.loads((args.out / "after" / "results.json").read_text())
    figures["same_figures"] = [r["metrics"] for r in a] == [r["metrics"] for r in b]
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
