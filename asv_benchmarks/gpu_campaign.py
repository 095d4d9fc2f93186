"""One call on a machine with an NVIDIA GPU: the CUDA test suite on the GPU
(``pytest -m cuda``, in parallel when pytest-xdist is installed), then
``gpunet bench --device cuda`` with torch and CuPy as peers, then
``gpunet bench --device cpu`` for the same machine's host side, all written
to ``asv_benchmarks/results/gpu/<date>-<time>-<card>/`` (or ``--out``):

- ``summary.md``: card, driver, CUDA runtime, date, the test counts and the
  two benchmark tables;
- ``tests.txt``: pytest's output;
- ``bench-cuda.json`` / ``bench-cpu.json``: ``gpunet bench --json``.

Run from the repository root, after ``pip install -e ".[test]"`` (and torch and
CuPy for the peers)::

    python asv_benchmarks/gpu_campaign.py [--quick]

Exits non-zero when the tests fail or no GPU is found (the benchmarks still run
when only tests fail, so that a partial campaign still yields numbers).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "asv_benchmarks" / "results" / "gpu"


def _gpu():
    """(card name, driver version, CUDA runtime) of GPU 0, or None without one."""
    from numba import cuda

    if not cuda.is_available():
        return None
    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    driver = "unknown"
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        driver = out.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        pass
    runtime = ".".join(map(str, cuda.runtime.get_version()))
    return name, driver, runtime


def _run(argv, log=None):
    """Run ``argv`` in the repository root; return (exit status, output)."""
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(output)
    return proc.returncode, output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="gpunet bench --quick")
    parser.add_argument(
        "--workers", type=int, default=8, help="pytest-xdist workers for the tests, if installed"
    )
    parser.add_argument(
        "--devices", nargs="+", default=["cuda", "cpu"], help="where to run gpunet bench"
    )
    parser.add_argument(
        "--out", type=pathlib.Path, default=RESULTS, help=f"results folder (default {RESULTS})"
    )
    args = parser.parse_args(argv)
    gpu = _gpu()
    if gpu is None:
        print("no CUDA GPU found: the campaign needs one", file=sys.stderr)
        return 2
    name, driver, runtime = gpu
    now = datetime.datetime.now(datetime.timezone.utc)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    out_dir = args.out / f"{now:%Y-%m-%d-%H%M}-{slug}"
    out_dir.mkdir(parents=True, exist_ok=True)

    pytest = [sys.executable, "-m", "pytest", "-q", "-m", "cuda"]
    if importlib.util.find_spec("xdist") is not None:
        pytest += ["-n", str(args.workers)]
    tests_status, tests = _run(pytest, out_dir / "tests.txt")
    summaries = [line for line in tests.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    counts = summaries[-1].strip("= ") if summaries else "no test summary (see tests.txt)"
    quick = ["--quick"] if args.quick else []
    tables = {}
    for device in args.devices:
        json_path = out_dir / f"bench-{device}.json"
        status, output = _run(
            [sys.executable, "-m", "gpunet", "bench", "--device", device, "--json", str(json_path)]
            + quick
        )
        tables[device] = output if status == 0 else f"gpunet bench failed ({status}):\n{output}"

    summary = [
        f"# GPU campaign, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"- card: {name}",
        f"- driver: {driver}; CUDA runtime {runtime}",
        f"- CUDA tests on the GPU (`python -m pytest -m cuda`): {counts}",
        "",
    ]
    for device, table in tables.items():
        summary += [f"## gpunet bench --device {device}", "", "```", table.rstrip(), "```", ""]
    (out_dir / "summary.md").write_text("\n".join(summary))
    print("\n".join(summary))
    print(f"results in {out_dir}")
    return 0 if tests_status == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
