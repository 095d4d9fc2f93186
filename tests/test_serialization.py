"""Saving and loading models: round trips (predictions, architecture, dtype,
evaluation mode), the ".npz" suffix, loading a CUDA model onto the CPU, and
clear errors for files that are not gpunet models, without ever unpickling."""

import io
import json
import zipfile

import numpy as np
import pytest

import gpunet as gn
from gpunet import nn
from gpunet.serialization import ARCHITECTURE


def model_with_every_layer(dtype="float32", device="cpu"):
    model = nn.Sequential(
        nn.Dense(5, 8, "leaky_relu", dtype, alpha=0.3, seed=1, device=device),
        nn.LeakyReLU(0.2),
        nn.Dense(8, 6, "tanh", dtype, seed=2, device=device),
        nn.Sigmoid(),
        nn.Dense(6, 6, "relu", dtype, seed=3, device=device),
        nn.ReLU(),
        nn.Tanh(),
        nn.Dense(6, 4, dtype=dtype, seed=4, device=device),
        nn.Softmax(),
    )
    rng = np.random.default_rng(0)
    model.load_state_dict({k: rng.standard_normal(v.shape) for k, v in model.state_dict().items()})
    return model


def inputs(n=9, features=5, dtype=np.float32):
    return np.random.default_rng(1).standard_normal((n, features)).astype(dtype)


def saved(tmp_path, model=None, name="model.npz"):
    path = tmp_path / name
    (model or model_with_every_layer()).save(path)
    return path


def archive_contents(path):
    """The architecture (a dict) and the arrays of a saved model."""
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    return json.loads(str(arrays.pop(ARCHITECTURE))), arrays


def write(path, architecture, arrays):
    np.savez(path, **{ARCHITECTURE: np.array(json.dumps(architecture))}, **arrays)
    return path


# --- round trips ---------------------------------------------------------------------


def small_model(dtype):
    return nn.Sequential(nn.Dense(5, 4, dtype=dtype, seed=1), nn.Dense(4, 3, dtype=dtype, seed=2))


@pytest.mark.parametrize(
    "make, dtype", [(model_with_every_layer, "float32"), (small_model, "float64")]
)
def test_round_trip(tmp_path, make, dtype):
    model = make(dtype).train()
    path = saved(tmp_path, model)
    loaded = gn.load(path, device="cpu")
    assert isinstance(loaded, nn.Sequential)
    assert repr(loaded) == repr(model)
    assert loaded.training is False and all(not layer.training for layer in loaded)
    assert loaded.dtype == np.dtype(dtype)
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for k in original:
        assert restored[k].dtype == np.dtype(dtype)
        np.testing.assert_array_equal(restored[k], original[k], err_msg=k)
    x = inputs(dtype=dtype)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


def test_round_trip_with_dropout_and_batch_norm(tmp_path):
    model = nn.Sequential(
        nn.Dense(5, 4, seed=1),
        nn.BatchNorm1d(4, momentum=0.3, eps=1e-3),
        nn.ReLU(),
        nn.Dropout(0.25, seed=3),
        nn.Dense(4, 3, seed=2),
    )
    model.forward(inputs())  # training mode: moves the running statistics
    loaded = gn.load(saved(tmp_path, model))
    assert repr(loaded) == repr(model)
    assert loaded[1].momentum == 0.3 and loaded[1].eps == 1e-3 and loaded[3].p == 0.25
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[name], value, err_msg=name)
    np.testing.assert_array_equal(loaded.predict(inputs()), model.predict(inputs()))


def test_round_trip_keeps_layer_settings(tmp_path):
    loaded = gn.load(saved(tmp_path))
    assert loaded[0].activation == "leaky_relu" and loaded[0].alpha == 0.3
    assert isinstance(loaded[1], nn.LeakyReLU) and loaded[1].alpha == 0.2
    assert [type(layer).__name__ for layer in loaded] == [
        "Dense",
        "LeakyReLU",
        "Dense",
        "Sigmoid",
        "Dense",
        "ReLU",
        "Tanh",
        "Dense",
        "Softmax",
    ]


def test_round_trip_of_a_trained_model(tmp_path):
    X, y = gn.datasets.load_digits()
    X = (X[:200] / 16).astype(np.float32)
    model = nn.Sequential(nn.Dense(64, 16, "relu", seed=0), nn.Dense(16, 10, seed=1))
    model.fit(X, y[:200], loss="softmax_cross_entropy", optimizer="adam", epochs=1, verbose=0)
    model.save(tmp_path / "digits")
    loaded = gn.load(tmp_path / "digits.npz")
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.evaluate(X, y[:200], loss="softmax_cross_entropy") == model.evaluate(X, y[:200])


def test_loading_leaves_the_default_generator_alone(tmp_path):
    path = saved(tmp_path)
    gn.manual_seed(3)
    expected = gn.random.uniform(4, device="cpu")
    gn.manual_seed(3)
    gn.load(path)
    np.testing.assert_array_equal(gn.random.uniform(4, device="cpu"), expected)


@pytest.mark.parametrize("as_str", [True, False])
def test_npz_suffix_is_appended_like_numpy(tmp_path, as_str):
    model = model_with_every_layer()
    path = tmp_path / "model"
    model.save(str(path) if as_str else path)
    assert (tmp_path / "model.npz").exists() and not path.exists()
    np.save(tmp_path / "reference", np.zeros(1))
    model.save(tmp_path / "again.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "again.npz",
        "model.npz",
        "reference.npy",
    ]
    for name in (path, tmp_path / "model.npz", str(path)):
        np.testing.assert_array_equal(gn.load(name).predict(inputs()), model.predict(inputs()))


def test_save_function_and_method_write_the_same(tmp_path):
    model = model_with_every_layer()
    model.save(tmp_path / "a.npz")
    gn.serialization.save(model, tmp_path / "b.npz")
    a, b = archive_contents(tmp_path / "a.npz"), archive_contents(tmp_path / "b.npz")
    assert a[0] == b[0]
    assert a[0]["format"] == "gpunet-model" and a[0]["version"] == 1
    assert a[1].keys() == b[1].keys() == model.state_dict().keys()


def test_model_without_parameters(tmp_path):
    model = nn.Sequential(nn.ReLU(), nn.Tanh())
    loaded = gn.load(saved(tmp_path, model))
    x = inputs()
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))


@pytest.mark.cuda
def test_cuda_model_loads_on_the_cpu(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    model = nn.Sequential(
        nn.Dense(4, 6, "relu", seed=1, device="cuda"), nn.Dense(6, 3, seed=2, device="cuda")
    )
    model.fit(
        X, y, loss="softmax_cross_entropy", optimizer="sgd", epochs=1, batch_size=8, verbose=0
    )
    path = saved(tmp_path, model)
    loaded = gn.load(path, device="cpu")
    assert loaded.device.type == "cpu"
    assert all(isinstance(p.data, np.ndarray) for p in loaded.parameters())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)
    np.testing.assert_allclose(loaded.predict(X), model.predict(X), rtol=1e-5, atol=1e-6)


@pytest.mark.cuda
def test_every_layer_loads_onto_the_device_asked_for(tmp_path):
    model = nn.Sequential(nn.Dense(4, 3, seed=1), nn.BatchNorm1d(3), nn.ReLU(), nn.Dropout(0.2))
    with gn.device("cpu"):
        loaded = gn.load(saved(tmp_path, model), device="cuda")
    assert {str(p.device) for p in loaded.parameters()} == {"cuda:0"}
    assert str(gn.nn._device_of(loaded[1].running_mean)) == "cuda:0"
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(loaded.state_dict()[k], v, err_msg=k)


# --- errors ----------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        gn.load(tmp_path / "nothing.npz")


def test_truncated_file(tmp_path):
    path = saved(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.npz.*truncated"):
        gn.load(cut)


def test_damaged_entry(tmp_path):
    """A whole archive whose weight entry holds fewer bytes than its header says."""
    architecture, arrays = archive_contents(saved(tmp_path))
    buffer = io.BytesIO()
    np.save(buffer, arrays["0.weight"])
    path = tmp_path / "damaged.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(ARCHITECTURE + ".npy", _npy(np.array(json.dumps(architecture))))
        for k, v in arrays.items():
            archive.writestr(k + ".npy", _npy(v) if k != "0.weight" else buffer.getvalue()[:-8])
    with pytest.raises(ValueError, match=r"damaged\.npz.*0\.weight"):
        gn.load(path)


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("content", [b"hello, not a model\n", b""])
def test_file_that_is_not_a_zip(tmp_path, content):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model\.npz.*not an npz archive"):
        gn.load(path)


def test_npy_file(tmp_path):
    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an npz archive"):
        gn.load(tmp_path / "array.npy")


def test_foreign_npz(tmp_path):
    np.savez(tmp_path / "data.npz", X=np.zeros(3), y=np.ones(2))
    with pytest.raises(ValueError, match=r"data\.npz.*no gpunet\.json.*X, y"):
        gn.load(tmp_path / "data.npz")


def _changed(tmp_path, change):
    architecture, arrays = archive_contents(saved(tmp_path))
    result = change(architecture, arrays)
    if result is not None:
        architecture = result
    return write(tmp_path / "changed.npz", architecture, arrays)


def _set(key, value):
    def change(architecture, arrays):
        architecture[key] = value

    return change


def _layer(i, **spec):
    def change(architecture, arrays):
        architecture["layers"][i].update(spec)

    return change


def _drop(key):
    def change(architecture, arrays):
        del arrays[key]

    return change


def _reshape(key):
    def change(architecture, arrays):
        arrays[key] = arrays[key][:-1]

    return change


def _add(architecture, arrays):
    arrays["9.weight"] = np.zeros((2, 2))


def _strings(architecture, arrays):
    arrays["0.bias"] = np.array(["a"] * len(arrays["0.bias"]))


BAD_ARCHITECTURES = {
    "other format": (_set("format", "keras-model"), "format 'keras-model'"),
    "newer version": (_set("version", 2), "version 2"),
    "no version": (_set("version", None), "version None"),
    "other model": (_set("model", "Graph"), "unsupported model 'Graph'"),
    "layers not a list": (_set("layers", "Dense"), "unsupported model"),
    "not an object": (lambda a, arrays: ["Dense"], "JSON object"),
    "unknown layer": (_layer(1, **{"class": "Conv2d"}), "layer 1 has unknown class 'Conv2d'"),
    "layer not an object": (
        lambda a, arrays: a["layers"].__setitem__(2, "Dense") or None,
        "layer 2",
    ),
    "config not an object": (_layer(0, config=[5, 8]), "layer 0"),
    "bad config": (
        _layer(0, config={"in_features": "five", "out_features": 8}),
        r"layer 0 \(Dense\) cannot be built",
    ),
    "config with a device": (
        _layer(0, config={"in_features": 5, "out_features": 8, "device": "cuda"}),
        r"layer 0 \(Dense\) cannot be built",
    ),
    "missing weight": (_drop("2.weight"), "missing array '2.weight'"),
    "misshapen weight": (_reshape("4.weight"), r"'4\.weight' of shape \(6, 6\), got \(5, 6\)"),
    "misshapen bias": (_reshape("7.bias"), r"'7\.bias' of shape \(4,\), got \(3,\)"),
    "unexpected array": (_add, "9.weight"),
    "string array": (_strings, "numeric array '0.bias'"),
}


@pytest.mark.parametrize("case", list(BAD_ARCHITECTURES))
def test_bad_architecture_or_arrays(tmp_path, case):
    change, match = BAD_ARCHITECTURES[case]
    path = _changed(tmp_path, change)
    with pytest.raises(ValueError, match=match) as info:
        gn.load(path)
    assert "changed.npz" in str(info.value)


@pytest.mark.parametrize("entry", ["", "{not json", "[1, 2"])
def test_architecture_that_is_not_json(tmp_path, entry):
    _, arrays = archive_contents(saved(tmp_path))
    np.savez(tmp_path / "bad.npz", **{ARCHITECTURE: np.array(entry)}, **arrays)
    with pytest.raises(ValueError, match="not valid JSON"):
        gn.load(tmp_path / "bad.npz")


def test_architecture_that_is_not_a_string(tmp_path):
    _, arrays = archive_contents(saved(tmp_path))
    np.savez(tmp_path / "bad.npz", **{ARCHITECTURE: np.arange(3)}, **arrays)
    with pytest.raises(ValueError, match="JSON string"):
        gn.load(tmp_path / "bad.npz")


UNPICKLED = []


def _unpickled():
    UNPICKLED.append(True)
    return "unpickled"


class Trap:
    """Records being unpickled: loading it would call ``_unpickled``."""

    def __reduce__(self):
        return (_unpickled, ())


@pytest.mark.parametrize("where", [ARCHITECTURE, "0.weight"])
def test_object_arrays_are_refused_without_unpickling(tmp_path, where):
    architecture, arrays = archive_contents(saved(tmp_path))
    entries = {ARCHITECTURE: np.array(json.dumps(architecture)), **arrays}
    entries[where] = np.array([Trap(), Trap()], dtype=object)
    np.savez(tmp_path / "pickled.npz", **entries)
    UNPICKLED.clear()
    with pytest.raises(ValueError, match=rf"pickled\.npz.*'{where}'.*pickled") as info:
        gn.load(tmp_path / "pickled.npz")
    assert UNPICKLED == []
    assert "never loads" in str(info.value)


class MyReLU(nn.ReLU):
    pass


class ReLU(nn.Layer):
    """A foreign layer that shares a gpunet layer's name."""

    def forward(self, x):
        return x


@pytest.mark.parametrize("layer", [MyReLU, ReLU, lambda: nn.Sequential(nn.ReLU())])
def test_saving_a_foreign_layer_raises(tmp_path, layer):
    model = nn.Sequential(nn.Dense(3, 2, seed=0), layer())
    with pytest.raises(TypeError, match="layer 1.*not a gpunet layer"):
        model.save(tmp_path / "model.npz")
    assert list(tmp_path.iterdir()) == []


def test_saving_something_else_raises(tmp_path):
    with pytest.raises(TypeError, match="Sequential"):
        gn.serialization.save(nn.Dense(3, 2), tmp_path / "model.npz")


def test_the_loss_is_saved_with_the_model(tmp_path):
    X = inputs(20)
    y = (X[:, :4] > 0).astype(np.float32)
    model = nn.Sequential(nn.Dense(5, 4, seed=1), nn.Sigmoid())
    bce = gn.losses.BinaryCrossEntropy(from_logits=False)
    model.fit(X, y, loss=bce, optimizer="sgd", epochs=1, verbose=0)
    loaded = gn.load(saved(tmp_path, model))
    assert type(loaded.loss) is gn.losses.BinaryCrossEntropy and not loaded.loss.from_logits
    assert loaded.evaluate(X, y) == model.evaluate(X, y)
    assert "accuracy" in loaded.evaluate(X, y)
    assert gn.load(saved(tmp_path, small_model("float32"), "unfitted.npz")).loss is None


# --- atomic writes -----------------------------------------------------------------------

SAVER = """
import os
import sys
import numpy as np
import gpunet as gn

model = gn.nn.Sequential(gn.nn.Dense(500, 1000, seed=0), gn.nn.Dense(1000, 500, seed=1))


def save(i):  # every array of save i holds the value i
    for p in model.parameters():
        p.data = np.full(p.shape, i, np.float32)
    model.save(sys.argv[1])
    print("saved", i, flush=True)


save(0)
for line in sys.stdin:  # "<i>": fork a child saving i + 1, i + 2, ...; "wait": reap it
    if line.strip() == "wait":
        os.waitpid(pid, 0)
        print("gone", flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        for i in range(int(line) + 1, 10**9):
            save(i)
    print("child", pid, flush=True)
"""


def test_a_save_killed_at_any_moment_leaves_the_old_or_the_new_model(tmp_path):
    """SIGKILL a process saving a 4 MB model over and over, at several moments
    after its first save: the file always loads, whole, as the last save that
    finished or the one under way."""
    import os
    import signal
    import subprocess
    import sys
    import time

    path = tmp_path / "model.npz"
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip

    def send(line):
        saver.stdin.write(line + "\n")
        saver.stdin.flush()

    def read_until(word):
        """The lines up to the first that starts with ``word``, split, that one last."""
        lines = []
        while not lines or lines[-1][0] != word:
            lines.append(saver.stdout.readline().split())
        return lines

    try:
        assert read_until("saved") == [["saved", "0"]]
        for trial, delay in enumerate([0.0, 0.013, 0.037, 0.071, 0.15, 0.29]):
            start = trial * 10**6
            send(str(start))
            child = None
            for word, value in read_until("saved"):  # the child's first save finished
                child = int(value) if word == "child" else child
            if child is None:
                child = int(read_until("child")[-1][1])
            time.sleep(delay)
            os.kill(child, signal.SIGKILL)
            send("wait")
            finished = [int(v) for word, v in read_until("gone")[:-1] if word == "saved"]
            model = gn.load(path)
            values = np.unique(np.concatenate([v.ravel() for v in model.state_dict().values()]))
            assert len(values) == 1, f"a mixture of saves {values}"
            done = max(finished, default=start + 1)
            assert values[0] in (done, done + 1), (values[0], done)
    finally:
        saver.kill()
        saver.wait()
    others = [p.name for p in tmp_path.iterdir() if p != path]
    assert all(name.startswith(".model.npz.") and name.endswith(".tmp") for name in others)


def test_a_failed_save_keeps_the_old_file_and_leaves_nothing(tmp_path, monkeypatch):
    model = model_with_every_layer()
    path = saved(tmp_path, model)
    old = path.read_bytes()

    def failing(file, **arrays):
        file.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", failing)
    with pytest.raises(OSError, match="disk full"):
        model_with_every_layer("float64").save(path)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_overwriting_keeps_the_file_mode_and_follows_links(tmp_path):
    path = saved(tmp_path)
    path.chmod(0o640)
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    small_model("float32").save(link)
    assert link.is_symlink() and (path.stat().st_mode & 0o777) == 0o640
    assert isinstance(gn.load(path)[0], nn.Dense) and len(gn.load(path)) == 2


# --- untrusted files ---------------------------------------------------------------------


def _architecture(*layers):
    return {"format": "gpunet-model", "version": 1, "model": "Sequential", "layers": list(layers)}


def _crafted(path, architecture, entries):
    """An npz of the architecture and raw npy ``entries`` (name -> bytes)."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(ARCHITECTURE + ".npy", _npy(np.array(json.dumps(architecture))))
        for key, data in entries.items():
            archive.writestr(key + ".npy", data)
    return path


def _header_only(shape, descr="<f4"):
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue()


def _dense(n_in, n_out):
    return {"class": "Dense", "config": {"in_features": n_in, "out_features": n_out}}


CRAFTED = {
    "a huge Dense and no arrays": (
        lambda: (_architecture(_dense(20000, 20000)), {}),
        "missing array '0.weight'",
    ),
    "a huge BatchNorm1d": (
        lambda: (
            _architecture({"class": "BatchNorm1d", "config": {"num_features": 3 * 10**8}}),
            {},
        ),
        "missing array",
    ),
    "a header declaring (10**6, 10**6)": (
        lambda: (
            _architecture(_dense(10**6, 10**6)),
            {"0.weight": _header_only((10**6, 10**6)), "0.bias": _header_only((10**6,))},
        ),
        "0.weight.*header declares 4,000,000,000,000",
    ),
    "a weight of another shape": (
        lambda: (
            _architecture(_dense(2, 3)),
            {
                "0.weight": _npy(np.zeros((3, 2), np.float32)),
                "0.bias": _npy(np.zeros(3, np.float32)),
            },
        ),
        r"'0.weight' of shape \(2, 3\), got \(3, 2\)",
    ),
    "a weight of another dtype": (
        lambda: (
            _architecture(_dense(2, 3)),
            {"0.weight": _npy(np.zeros((2, 3))), "0.bias": _npy(np.zeros(3, np.float32))},
        ),
        "'0.weight' of dtype float32, got float64",
    ),
    "an entry that is not an array": (
        lambda: (_architecture(), {"notes": b"hello"}),
        "damaged npz archive",
    ),
}


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_files_are_refused_before_anything_is_allocated(tmp_path, monkeypatch, case):
    import tracemalloc

    make, match = CRAFTED[case]
    path = _crafted(tmp_path / "crafted.npz", *make())
    assert path.stat().st_size < 2048
    built = []
    for cls in (nn.Dense, nn.BatchNorm1d):
        monkeypatch.setattr(cls, "__init__", lambda self, *a, **k: built.append(self))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=match) as info:
            gn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "crafted.npz" in str(info.value)
    assert built == []
    assert peak < 64 * 2**20


def _lying_archive(path, stored_size):
    """A model whose weight entry's sizes in the zip directories say ``stored_size``."""
    saved_path = saved(path.parent, nn.Sequential(nn.Dense(2, 3, seed=0)), "honest.npz")
    data = bytearray(saved_path.read_bytes())
    with zipfile.ZipFile(saved_path) as archive:
        info = archive.getinfo("0.weight.npy")
    size = info.file_size.to_bytes(4, "little")
    data = data.replace(size + size, stored_size.to_bytes(4, "little") * 2)
    path.write_bytes(bytes(data))
    return path


def test_zip_sizes_larger_than_the_file_are_refused(tmp_path):
    path = _lying_archive(tmp_path / "lying.npz", 2**31)
    with pytest.raises(ValueError, match=r"lying\.npz.*0\.weight"):
        gn.load(path)


def test_arrays_are_capped_at_a_multiple_of_the_file_size(tmp_path):
    model = nn.Sequential(nn.Dense(200, 300, seed=0), nn.BatchNorm1d(300))
    model.load_state_dict({k: np.zeros_like(v) for k, v in model.state_dict().items()})
    architecture, arrays = archive_contents(saved(tmp_path, model))
    path = tmp_path / "compressed.npz"
    np.savez_compressed(path, **{ARCHITECTURE: np.array(json.dumps(architecture))}, **arrays)
    declared = sum(a.nbytes for a in arrays.values())
    assert declared > gn.serialization.ALLOCATION_RATIO * path.stat().st_size
    with pytest.raises(ValueError, match=r"compressed\.npz.*max_bytes"):
        gn.load(path)
    loaded = gn.load(path, max_bytes=10 * declared)
    assert np.array_equal(
        loaded.predict(np.ones((2, 200), np.float32)), model.predict(np.ones((2, 200), np.float32))
    )
    with pytest.raises(ValueError, match="max_bytes"):
        gn.load(path, max_bytes=-1)


def test_every_damage_raises_value_error_naming_the_file(tmp_path):
    """Bytes changed at many places, and truncations at many lengths: a ValueError
    naming the file, or (a byte the format does not check, such as a timestamp)
    the very same model."""
    model = nn.Sequential(nn.Dense(3, 4, seed=0), nn.BatchNorm1d(4), nn.Dense(4, 2, seed=1))
    gn.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = gn.optim.Adam(model.parameters())
    model.save(tmp_path / "good.npz", optimizer=opt)
    data = (tmp_path / "good.npz").read_bytes()
    x = np.ones((2, 3), np.float32)
    expected = model.predict(x)
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.npz"
    changes = [
        *((int(i), None) for i in rng.choice(len(data), 300, replace=False)),
        *((None, int(n)) for n in rng.choice(len(data), 60, replace=False)),
    ]
    for position, length in changes:
        if position is None:
            damaged.write_bytes(data[:length])
        else:
            changed = bytearray(data)
            changed[position] ^= 1 << int(rng.integers(8))
            damaged.write_bytes(bytes(changed))
        try:
            loaded = gn.load(damaged)
        except ValueError as exc:
            assert "damaged.npz" in str(exc), (position, length, exc)
        else:
            np.testing.assert_array_equal(loaded.predict(x), expected)
