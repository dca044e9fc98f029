"""Run every PyTorch member's bench on a GPU, with ``torch.compile`` off and on, into one JSON.

    uv run python tools/gpu_check.py [--out gpu_check.json] [--only nanologic seeddelta]
                                     [--device cuda] [--quick] [--timeout 900]
                                     [--launcher uv|python]

For each of nanologic, tormented-mini, infinito-iit and seeddelta it runs ``<cli> bench --device
cuda --out FILE``, then for each the same with ``--compile``, one process each, one after another
(timings taken while another bench runs are meaningless). Every eager bench comes before the
compiled ones, and the report is rewritten after each bench, so a run cut short keeps what it
measured. ``--launcher python`` runs ``python -m <package>.cli`` with this interpreter instead of
``uv run --package``: for a GPU image that has PyTorch but no uv, with the workspace's sources on
``PYTHONPATH``. Each bench trains in the precision the member's
trainer picks for the card (``lm_shared.runtime.detect_precision``: bf16 on Ampere and newer,
fp16 on Volta/Turing such as the T4, fp32 on the P40 whose fp16 is slow). The report holds the
GPU (name, compute capability, memory, the precision chosen), the torch and CUDA versions, and per
member and setting the exit status, wall time, the bench's JSON or the tail of its stderr.

Without a GPU it stops with one line; ``--device cpu`` runs the same plan on the CPU (with
``--quick``, the members' smallest sizes) to check the tool itself. Exit status 1 when any bench
failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# distribution -> console script
MEMBERS = {
    "nanologic": "nanologic",
    "tormented-mini": "tormented-mini",
    "infinito-iit": "infinito",
    "seeddelta": "seeddelta",
}
# Small sizes for --quick (checking the tool, not measuring).
QUICK_ARGS = {
    "nanologic": ["--quick", "--threads", "1"],
    "tormented-mini": ["--size", "cpu", "--batch-size", "1", "--seq-len", "16", "--steps", "1", "--no-bf16"],
    "infinito-iit": [
        "--d-model",
        "32",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--max-seq-len",
        "32",
        "--memory-slots",
        "8",
        "--seq-len",
        "32",
        "--batch-size",
        "2",
        "--steps",
        "1",
    ],  # fmt: skip
    "seeddelta": ["--n-in", "256", "--n-out", "512", "--repeats", "1", "--threads", "1"],
}


def bench_command(
    dist: str, out: Path, device: str, compile: bool, quick: bool, launcher: str = "uv"
) -> list[str]:
    """The command line that runs ``dist``'s bench: ``uv run --package`` or this interpreter's ``-m``."""
    if launcher == "uv":
        cli = ["uv", "run", "--package", dist, MEMBERS[dist]]
    else:
        cli = [sys.executable, "-m", f"{dist.replace('-', '_')}.cli"]
    cmd = [*cli, "bench", "--device", device, "--out", str(out)]
    if compile:
        cmd.append("--compile")
    if quick:
        cmd += QUICK_ARGS[dist]
    return cmd


def device_report(device: str) -> dict[str, object]:
    """What the benches run on: the GPU and the precision the trainers pick for it."""
    import platform

    import torch

    from lm_shared.runtime import detect_precision

    info: dict[str, object] = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "precision": detect_precision(device),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name,
            compute_capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def run_plan(
    members: list[str],
    device: str,
    quick: bool,
    timeout: float,
    work: Path,
    runner=subprocess.run,
    launcher: str = "uv",
    on_result=None,
) -> dict[str, dict[str, object]]:
    """Run every member's bench eager, then every member's with ``--compile``.

    ``runner`` is ``subprocess.run``; ``on_result(results)`` is called after each bench.
    """
    results: dict[str, dict[str, object]] = {dist: {} for dist in members}
    for compile in (False, True):
        for dist in members:
            setting = "compile" if compile else "eager"
            out = work / f"{dist}-{setting}.json"
            cmd = bench_command(dist, out, device, compile, quick, launcher)
            print(f"== {dist} ({setting}): {' '.join(cmd)}", flush=True)
            start = time.perf_counter()
            entry: dict[str, object] = {"command": " ".join(cmd)}
            try:
                proc = runner(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                entry.update(returncode=None, error=f"timed out after {timeout:.0f} s")
            else:
                entry["returncode"] = proc.returncode
                if proc.returncode == 0 and out.is_file():
                    entry["result"] = json.loads(out.read_text(encoding="utf-8"))
                else:
                    entry["stderr_tail"] = proc.stderr[-2000:]
            entry["wall_s"] = round(time.perf_counter() - start, 1)
            status = "ok" if "result" in entry else "FAILED"
            print(f"   {status} in {entry['wall_s']} s", flush=True)
            results[dist][setting] = entry
            if on_result is not None:
                on_result(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the one JSON report")
    parser.add_argument("--only", nargs="+", choices=sorted(MEMBERS), help="run only these members")
    parser.add_argument(
        "--device", choices=("cuda", "cpu"), default="cuda", help="cpu: check the tool itself"
    )
    parser.add_argument("--quick", action="store_true", help="the members' smallest sizes")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per bench run")
    parser.add_argument(
        "--launcher",
        choices=("uv", "python"),
        default="uv",
        help="python: this interpreter's -m <package>.cli (a GPU image without uv)",
    )
    args = parser.parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "error: no CUDA device is visible to PyTorch; run on a GPU machine (or --device cpu)",
                file=sys.stderr,
            )
            return 2
    members = args.only or list(MEMBERS)
    report: dict[str, object] = {"machine": device_report(args.device)}
    args.out.parent.mkdir(parents=True, exist_ok=True)

    def write_report(results: dict[str, dict[str, object]]) -> None:
        report["benches"] = results
        tmp_out = args.out.with_name(args.out.name + ".tmp")
        tmp_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp_out, args.out)

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        results = run_plan(
            members,
            args.device,
            args.quick,
            args.timeout,
            Path(tmp),
            launcher=args.launcher,
            on_result=write_report,
        )
    write_report(results)
    failed = [
        f"{d} ({s})" for d, settings in results.items() for s, e in settings.items() if "result" not in e
    ]
    print(f"wrote {args.out}")
    if failed:
        print(f"benches failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
