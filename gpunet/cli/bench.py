"""``gpunet bench``: every workload of :mod:`gpunet.benchmarks` on one device,
as one table: median time, achieved rate, fraction of the machine's ceiling
(a large matrix product's GFLOP/s, a large copy's GB/s, both measured at the
start), and time(peer) / time(gpunet) for each installed peer (numpy, torch,
scikit-learn on the CPU; torch and CuPy on a GPU), timed alternately in the
same process. ``--json`` writes it all with the device, versions and thread
count.

Each time is the median of several samples, shown with the fastest and
slowest (a row whose samples spread by more than a quarter of the median is
marked ``!``), and the run says whether the machine was busy: the load
average at the start and the CPU time other processes took during the run."""

from __future__ import annotations

import datetime
import json
import platform
import time

from . import _checks
from ._output import format_seconds, format_table, package_version

PEERS = ("numpy", "torch", "sklearn", "cupy")


def add_parser(subparsers) -> None:
    from ..benchmarks import WORKLOADS

    bench = subparsers.add_parser(
        "bench",
        help="time every kernel against the machine's limits and against peers",
        description="Time gpunet's kernels and training loops on one device against the "
        "machine's ceilings and against numpy, PyTorch and scikit-learn where installed.",
    )
    bench.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto")
    bench.add_argument("--quick", action="store_true", help="tiny sizes, few samples")
    bench.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    bench.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS,
        metavar="WORKLOAD",
        help=f"run only these workloads (of {', '.join(WORKLOADS)})",
    )
    bench.add_argument(
        "--no-peers", action="store_true", help="time gpunet alone (no numpy, torch, scikit-learn)"
    )
    bench.set_defaults(run=run)


def _blas() -> str:
    """numpy's BLAS, the kernel it runs and its threads (through threadpoolctl)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (install threadpoolctl to see it)"
    found = [
        f"{i['internal_api']} {i.get('version') or ''} {i.get('architecture') or ''} "
        f"x{i['num_threads']}".replace("  ", " ")
        for i in threadpool_info()
        if i.get("user_api") == "blas"
    ]
    return ", ".join(found) or "none loaded"


def _spread(row) -> str:
    """The fastest and slowest samples' time per call, in the median's unit."""
    if row.low is None:
        return "-"
    low, high = format_seconds(row.low).split(), format_seconds(row.high).split()
    if low[1] == high[1]:
        return f"{low[0]}-{high[0]} {low[1]}"
    return f"{' '.join(low)}-{' '.join(high)}"


def _cell(value, unit):
    if unit == "samples/s":
        return f"{value:,.0f} {unit}"
    return f"{value:.3g} {unit}"


def run(args) -> int:
    import numba

    from ..benchmarks import Bench, Settings
    from ..benchmarks.load import SPREAD_LIMIT, LoadMonitor

    device = _checks.device(args.device)
    if args.json:
        _checks.writable(args.json, "--json")
    started = time.perf_counter()
    load = LoadMonitor()
    load.start()
    bench = Bench(device, Settings(quick=args.quick), peers=() if args.no_peers else PEERS)
    print(f"gpunet bench on {device} ({device.name}), {numba.get_num_threads()} threads")
    print(f"  BLAS: {_blas()}")
    print(
        f"  ceilings: matrix product {bench.matmul_gflops:.1f} GFLOP/s ({bench.matmul_kind}), "
        f"copy {bench.copy_gbps:.1f} GB/s"
    )
    rows = bench.run(args.only)
    load.stop()
    # "eager": a GPU row with CUDA graph replays against the same work launched eagerly.
    peers = [p for p in (*PEERS, "eager") if any(p in row.peers for row in rows)]
    counted = any(row.launches is not None for row in rows)
    table = [
        (
            row.name + (" !" if row.unsteady else ""),
            format_seconds(row.seconds),
            _spread(row),
            _cell(row.rate, row.unit),
            "-" if row.ceiling is None else f"{row.ceiling:.0%}",
            *(("-" if row.launches is None else f"{row.launches:.3g}",) if counted else ()),
            *(f"{row.peers[p]:.2f}x" if p in row.peers else "-" for p in peers),
        )
        for row in rows
    ]
    header = (
        "workload", "time", "min-max", "rate", "of ceiling",
        *(("launches/step",) if counted else ()), *(f"vs {p}" for p in peers),
    )  # fmt: skip
    print(format_table(header, table))
    print(
        "  (time: median per call, min-max: the fastest and slowest samples; "
        "vs X: time(X) / time(gpunet), above 1 when gpunet is faster)"
    )
    unsteady = sum(row.unsteady for row in rows)
    if unsteady:
        print(
            f"  ! {unsteady} of {len(rows)} rows: samples spread by more than "
            f"{SPREAD_LIMIT:.0%} of the median"
        )
    print(f"  machine: {load.describe()}")
    for note in bench.notes:
        print(f"  note: {note}")
    print(f"  {time.perf_counter() - started:.0f} s")
    if args.json:
        report = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "device": str(device),
            "device_name": device.name,
            "threads": numba.get_num_threads(),
            "blas": _blas(),
            "quick": args.quick,
            "python": platform.python_version(),
            "versions": {
                name: package_version(name)
                for name in (
                    "gpunet",
                    "numpy",
                    "numba",
                    "numba-cuda",
                    "torch",
                    "scikit-learn",
                    "cupy",
                )
            },
            "ceilings": {
                "matmul_gflops": bench.matmul_gflops,
                "matmul_kind": bench.matmul_kind,
                "copy_gbps": bench.copy_gbps,
            },
            "rows": [
                {
                    "name": row.name,
                    "seconds": row.seconds,
                    "rate": row.rate,
                    "unit": row.unit,
                    "fraction_of_ceiling": row.ceiling,
                    "peer_ratios": row.peers,
                    "min_seconds": row.low,
                    "max_seconds": row.high,
                    "unsteady": row.unsteady,
                    "launches_per_step": row.launches,
                }
                for row in rows
            ],
            "notes": bench.notes,
            "load": {
                "busy": load.busy,
                "load_average": load.load_average,
                "others": load.others,
                "cores": load.cores,
                "unsteady_rows": unsteady,
            },
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"  wrote {args.json}")
    return 0
