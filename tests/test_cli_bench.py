"""``gpunet bench``: a quick run's table and JSON report, peers and their
absence, and the CUDA path of the cheapest workload."""

import json
import pathlib

import numpy as np
import pytest

import gpunet as gn
from gpunet import benchmarks, cli
from gpunet.benchmarks import ceilings, load, timing, workloads

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_quick_run_reports_rates_ceilings_and_peers(tmp_path, capsys):
    path = tmp_path / "bench.json"
    argv = ["bench", "--quick", "--device", "cpu", "--only", "dispatch", "dense", "mlp_epoch"]
    argv += ["mlp_classifier", "dbn_pretrain"]
    assert cli.main([*argv, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "ceilings: matrix product" in out and "GFLOP/s" in out
    report = json.loads(path.read_text())
    assert report["device"] == "cpu" and report["threads"] >= 1 and report["quick"] is True
    assert report["versions"]["gpunet"] == gn.__version__
    assert report["ceilings"]["matmul_gflops"] > 0 and report["ceilings"]["copy_gbps"] > 0
    rows = {row["name"].split()[0]: row for row in report["rows"]}
    assert set(rows) == {"dispatch:", "dense", "MLP", "MLPClassifier", "DBN"}
    assert rows["MLPClassifier"]["peer_ratios"]["sklearn"] > 0
    assert rows["DBN"]["unit"] == "samples/s" and rows["DBN"]["peer_ratios"]["sklearn"] > 0
    assert rows["dense"]["unit"] == "GFLOP/s" and 0 < rows["dense"]["fraction_of_ceiling"]
    assert rows["MLP"]["unit"] == "samples/s" and rows["MLP"]["rate"] > 0
    assert rows["MLP"]["peer_ratios"]["numpy"] > 0
    for row in report["rows"]:
        assert row["seconds"] > 0
        assert row["name"] in out


def test_no_peers_times_gpunet_alone(capsys):
    assert cli.main(["bench", "--quick", "--device", "cpu", "--only", "dense", "--no-peers"]) == 0
    out = capsys.readouterr().out
    assert "vs numpy" not in out and "dense fwd+bwd" in out


def test_missing_peers_are_skipped_with_a_note(monkeypatch):
    monkeypatch.setattr(workloads, "torch_module", lambda: None)
    bench = benchmarks.Bench("cpu", benchmarks.Settings(quick=True), peers=("numpy", "torch"))
    (row,) = bench.run(["dispatch"])
    assert "torch" not in row.peers
    assert "torch is not installed: no torch peer" in bench.notes


def test_ratios_are_peer_time_over_gpunet_time():
    settings = benchmarks.Settings(quick=True)
    slow = lambda: sum(range(20000))  # noqa: E731
    fast = lambda: sum(range(2000))  # noqa: E731
    assert benchmarks.median_ratio(slow, fast, gn.Device("cpu"), settings) > 2


@pytest.mark.parametrize("nbytes", [1 << 15, 3 << 14, 1000])
def test_cpu_copies_for_the_ceiling_copy_every_byte(nbytes):
    """Each of the copies the copy ceiling is the fastest of moves the whole
    buffer; the streaming one joins where its rows divide the buffer."""
    fns = benchmarks.copies(gn.Device("cpu"), nbytes)
    assert len(fns) == (3 if nbytes % ceilings._STREAMING_CHUNK == 0 else 2)
    for fn in fns:
        dst, src = fn.args if fn.func is np.copyto else fn.args[::-1]
        src, dst = src.reshape(-1).view(np.uint8), dst.reshape(-1).view(np.uint8)
        src[:] = np.random.default_rng(nbytes).integers(0, 256, nbytes, np.uint8)
        dst[:] = 0
        fn()
        assert src.nbytes == nbytes and np.array_equal(dst, src)


@pytest.mark.cuda
def test_dispatch_workload_on_cuda():
    bench = benchmarks.Bench("cuda", benchmarks.Settings(quick=True), peers=())
    (row,) = bench.run(["dispatch"])
    assert row.unit == "us/call" and row.seconds > 0


@pytest.mark.cuda
def test_training_rows_count_launches_per_step_on_cuda():
    x = gn.to_device(np.ones(8, np.float32), "cuda")

    def two_steps():
        for _ in range(2):
            gn.ops.relu(x, out=x)
            gn.ops.tanh(x, out=x)

    assert (
        benchmarks.Bench("cuda", benchmarks.Settings(quick=True), peers=())._launches(two_steps, 2)
        == 2
    )
    assert (
        benchmarks.Bench("cpu", benchmarks.Settings(quick=True), peers=())._launches(two_steps, 2)
        is None
    )


@pytest.mark.skipif(gn.cuda_status()[0] > 0, reason="checks the refusal on a machine without a GPU")
def test_gpu_campaign_needs_a_gpu(capsys):
    import runpy

    campaign = runpy.run_path(str(ROOT / "asv_benchmarks" / "gpu_campaign.py"))
    assert campaign["main"]([]) == 2
    assert "no CUDA GPU found" in capsys.readouterr().err


@pytest.mark.parametrize("device,foreign_threads,pauses", [
    ("cpu", True, 1), ("cpu", False, 0), ("cuda", True, 0),
])  # fmt: skip
def test_ratios_between_thread_pools_pause_before_each_sample(
    monkeypatch, device, foreign_threads, pauses
):
    """Against a peer with CPU threads of its own, each sample of either side
    starts after a pause long enough for the other's spinning workers to stop."""
    settings = benchmarks.Settings()
    events = []
    monkeypatch.setattr(timing, "_per_sample", lambda fn, device, seconds: 1)
    monkeypatch.setattr(timing, "_sample", lambda fn, device, n: events.append(fn) or 1.0)
    monkeypatch.setattr(timing.time, "sleep", lambda s: events.append(s) if s else None)
    peer, ours = "peer", "ours"
    ratio = benchmarks.median_ratio(peer, ours, gn.Device(device), settings, foreign_threads)
    assert ratio == 1.0
    one_round = [settings.idle_seconds] * pauses + [ours] + [settings.idle_seconds] * pauses
    one_round += [peer]
    assert settings.idle_seconds == benchmarks.BLAS_IDLE_SECONDS > 0.1
    rounds = len(events) // len(one_round)
    assert rounds >= settings.min_samples
    assert events == one_round * rounds
    assert benchmarks.Settings(quick=True).idle_seconds == 0


def test_memory_bound_rows_stay_within_their_paired_copy_ceiling():
    bench = benchmarks.Bench("cpu", benchmarks.Settings(quick=True), peers=())
    rows = bench.run(["elementwise"])
    assert {row.name.split()[0] for row in rows} == set(workloads.NUMPY_ELEMENTWISE)
    for row in rows:
        assert row.unit == "GB/s" and 0 < row.ceiling <= 1, row
        assert row.low <= row.seconds <= row.high


def test_rows_with_spread_samples_are_marked_and_the_load_is_reported(monkeypatch, capsys):
    steady = benchmarks.Row("steady", 1.0, 1.0, "GB/s", None, low=0.95, high=1.2)
    unsteady = benchmarks.Row("unsteady", 1.0, 1.0, "GB/s", None, low=0.9, high=1.3)
    assert not steady.unsteady and unsteady.unsteady
    monitor = load.LoadMonitor(load_average=0.2, others=0.02, cores=2)
    assert not monitor.busy and monitor.describe().startswith("quiet (load average 0.20")
    assert load.LoadMonitor(load_average=1.0, others=0.0, cores=2).busy
    busy = load.LoadMonitor(load_average=None, others=0.4, cores=2)
    assert busy.busy and "other processes used 40% of the CPUs" in busy.describe()
    assert load.spread([1.0, 2.0, 1.5]) == pytest.approx(2 / 3)

    monkeypatch.setattr(load.LoadMonitor, "busy", property(lambda self: True))

    def fixed_time(self, fn):
        self._spread = (0.5e-3, 2e-3)
        return 1e-3

    monkeypatch.setattr(workloads.Bench, "_time", fixed_time)
    argv = ["bench", "--quick", "--device", "cpu", "--only", "dispatch", "--no-peers"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "dispatch: relu 1x10 !  1.00 ms  500.0 us-2.00 ms" in out
    assert "! 1 of 1 rows: samples spread by more than 25% of the median" in out
    assert "machine: BUSY, times are unreliable" in out
