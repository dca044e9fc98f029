"""Run every member's benchmark on this machine, one after another, and collect the JSON.

    uv run python tools/bench_all.py [--out runs/bench] [--only nanologic seeddelta]

Each member's `<cli> bench --out FILE.json` runs in its own process (so one member's threads or
caches do not disturb the next), its JSON is kept as `<out>/<member>.json`, and a summary with
the machine description goes to `<out>/summary.json`. Benchmarks run sequentially on purpose:
timings taken while another benchmark runs are meaningless.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

MEMBERS = {
    "nanologic": "nanologic",
    "tormented-mini": "tormented-mini",
    "lstm-textgen": "lstm-textgen",
    "infinito-iit": "infinito",
    "seeddelta": "seeddelta",
}


def machine() -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for the JSON files")
    parser.add_argument("--only", nargs="+", choices=sorted(MEMBERS), help="run only these members")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, object] = {"machine": machine(), "members": {}}
    failed = []
    for dist in args.only or list(MEMBERS):
        target = args.out / f"{dist}.json"
        cmd = ["uv", "run", "--package", dist, MEMBERS[dist], "bench", "--out", str(target)]
        print(f"== {dist}: {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        proc = subprocess.run(cmd)
        elapsed = time.perf_counter() - start
        entry: dict[str, object] = {"returncode": proc.returncode, "wall_s": round(elapsed, 1)}
        if proc.returncode == 0 and target.is_file():
            entry["result"] = json.loads(target.read_text(encoding="utf-8"))
        else:
            failed.append(dist)
        summary["members"][dist] = entry  # type: ignore[index]
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"summary: {args.out / 'summary.json'}")
    if failed:
        print(f"benchmarks failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
