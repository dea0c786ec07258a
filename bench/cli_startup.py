"""Wall time of the command line's fast commands, each in a fresh process (median of N runs).

python bench/cli_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _commands(scratch: Path) -> list[list[str]]:
    site = str(scratch / "site")
    (scratch / "site").mkdir(exist_ok=True)
    return [
        ["--help"],
        ["--version"],
        ["inspect", "--help"],
        ["upscale", "--help"],
        ["convert", "--help"],
        ["autoload", "--help"],
        ["autoload", "status", "--site-dir", site],
        ["autoload", "enable", "--site-dir", site],
        ["autoload", "disable", "--site-dir", site],
        ["comfyui-node", "--help"],
    ]


def _time(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "spandrel_fdat.cli", *args], capture_output=True, check=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    baseline = statistics.median(_time_python() for _ in range(args.runs))
    print(f"python -c pass: {baseline:.3f} s (median of {args.runs})")
    print("| command | median s |\n|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for command in _commands(Path(scratch)):
            median = statistics.median(_time(command) for _ in range(args.runs))
            label = " ".join(a if not a.startswith(scratch) else "DIR" for a in command)
            print(f"| spandrel-fdat {label} | {median:.3f} |")


def _time_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=False)
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
