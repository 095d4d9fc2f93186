"""Mini-batching."""

import numpy as np
import pytest

import gpunet as gn


def test_batches_cover_every_row_once_in_order():
    X, y = np.arange(20).reshape(10, 2), np.arange(10)
    got = list(gn.data.batches(X, y, batch_size=4))
    assert [len(b[1]) for b in got] == [4, 4, 2]
    np.testing.assert_array_equal(np.concatenate([b[1] for b in got]), y)
    assert np.shares_memory(got[0][0], X)  # no copy without shuffling


def test_shuffled_batches_follow_the_seed():
    X = np.arange(50)
    first = np.concatenate(list(gn.data.batches(X, batch_size=8, shuffle=True, seed=3)))
    again = np.concatenate(list(gn.data.batches(X, batch_size=8, shuffle=True, seed=3)))
    other = np.concatenate(list(gn.data.batches(X, batch_size=8, shuffle=True, seed=4)))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other) and not np.array_equal(first, X)
    np.testing.assert_array_equal(np.sort(first), X)


def test_bad_arguments():
    with pytest.raises(ValueError, match="expected y with 3 rows like X, got 2"):
        next(gn.data.batches(np.zeros(3), np.zeros(2)))
    with pytest.raises(ValueError, match="positive integer batch_size, got 0"):
        next(gn.data.batches(np.zeros(3), batch_size=0))
