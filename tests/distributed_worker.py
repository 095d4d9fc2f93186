"""What each rank of tests/test_distributed.py's MPI jobs runs
(``mpiexec -n 2 python tests/distributed_worker.py MODE OUT``).

``train``: the world's facts, broadcast_parameters and allreduce_gradients
on a small model, then a data-parallel fit of an MLP with dropout (and a
per-epoch ModelCheckpoint) and of a gn.RBM (PCD and CD), each rank saving
what it ended with to OUT/rank<r>.npz for the test to compare across ranks
and with one process; then ``gpunet train`` and ``gpunet rbm``, each rank's
standard output in OUT/cli-rank<r>.txt. ``fail``: a fit in which rank 1
raises after its first epoch, which must end the job with a message naming
the rank.
"""

import contextlib
import json
import os
import sys

import numpy as np

import gpunet as gn
from gpunet import distributed
from gpunet.cli import main

#: The data both the ranks and the test's single process fit.
ROWS, FEATURES, HIDDEN, CLASSES = 46, 7, 12, 3
#: Each rank's batch; 5 rows of 12 hidden units put rank 1's dropout mask
#: 60 elements into the global batch's, inside a Philox block.
BATCH = 5
EPOCHS = 2


def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(ROWS, FEATURES)).astype(np.float32)
    y = rng.integers(0, CLASSES, ROWS)
    return X, y


def mlp():
    return gn.nn.Sequential(
        gn.nn.Dense(FEATURES, HIDDEN, "relu", seed=1),
        gn.nn.Dropout(0.3, seed=7),
        gn.nn.Dense(HIDDEN, CLASSES, seed=2),
    )


def fit_mlp(model, batch_size, callbacks=()):
    X, y = data()
    optimizer = gn.optim.Adam(model.parameters(), lr=0.01)
    return model.fit(
        X, y, loss=gn.losses.SoftmaxCrossEntropy(), optimizer=optimizer, epochs=EPOCHS,
        batch_size=batch_size, seed=3, verbose=0, callbacks=callbacks,
        validation_data=(X[:10], y[:10]),
    )  # fmt: skip


def rbm_data():
    X, _ = gn.datasets.load_digits()
    return (X[:63] / 16.0).astype(np.float64)


def fit_rbm(batch_size, persistent):
    rbm = gn.RBM(
        9, learning_rate=0.05, batch_size=batch_size, n_iter=2, random_state=0, k=2,
        persistent=persistent, momentum=0.5, weight_decay=1e-3, device="cpu", dtype="float64",
    )  # fmt: skip
    return rbm.fit(rbm_data())


def train(out):
    gn.set_device("cpu")
    distributed.init()
    rank, size = distributed.rank(), distributed.world_size()
    facts = {"rank": rank, "size": size, "initialized": distributed.is_initialized()}

    model = gn.nn.Sequential(gn.nn.Dense(3, 2, seed=rank))  # different weights on each rank
    distributed.broadcast_parameters(model)
    facts["broadcast"] = gn.to_numpy(model.layers[0].weight.data).tolist()
    for p in model.parameters():
        p.grad[...] = rank + 1  # ranks 1 and 2: the average is 1.5
    distributed.allreduce_gradients(model)
    facts["averaged"] = sorted({float(v) for p in model.parameters() for v in p.grad.ravel()})
    distributed.barrier()

    model = mlp()
    checkpoint = gn.training.ModelCheckpoint(os.path.join(out, f"ckpt-rank{rank}-{{epoch}}"))
    history = fit_mlp(model, BATCH, [checkpoint])
    facts["history"] = history.history
    facts["mlp_keys"] = list(model.state_dict())
    arrays = {f"mlp.{k}": v for k, v in model.state_dict().items()}
    for name, persistent in (("pcd", True), ("cd", False)):
        rbm = fit_rbm(BATCH, persistent)
        arrays[f"{name}.W"] = rbm.components_
        arrays[f"{name}.b"] = rbm.intercept_visible_
        arrays[f"{name}.c"] = rbm.intercept_hidden_
    np.savez(os.path.join(out, f"rank{rank}.npz"), **arrays)

    # The command line in the same world: rank 0 alone prints and writes.
    cli_out = os.path.join(out, f"cli-rank{rank}.txt")
    with open(cli_out, "w") as f, contextlib.redirect_stdout(f):
        facts["train_status"] = main(
            ["train", "--epochs", "2", "--hidden", "8", "--verbose", "0",
             "--output", os.path.join(out, "model")]
        )  # fmt: skip
        facts["rbm_status"] = main(["rbm", "--epochs", "1", "--components", "8", "--device", "cpu"])
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(facts, f)
    distributed.shutdown()
    facts = {"initialized_after_shutdown": distributed.is_initialized()}
    with open(os.path.join(out, f"rank{rank}-end.json"), "w") as f:
        json.dump(facts, f)


class _Breaks(gn.training.Callback):
    """Raises at the end of the first epoch on rank 1 only."""

    def on_epoch_end(self, epoch, logs):
        if distributed.rank() == 1:
            raise RuntimeError("rank 1 broke on purpose")


def fail():
    gn.set_device("cpu")
    distributed.init()
    X, y = data()
    model = gn.nn.Sequential(gn.nn.Dense(FEATURES, CLASSES, seed=1))
    model.fit(
        X, y, loss=gn.losses.SoftmaxCrossEntropy(), optimizer="sgd", epochs=3, verbose=0,
        callbacks=[_Breaks()],
    )  # fmt: skip
    print("fit returned", flush=True)


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    train(out) if mode == "train" else fail()
