"""scikit-learn's own estimator checks over every gn estimator.

Each estimator is configured small (few units, few epochs) so that the
checks stay cheap; the RBM runs with Gaussian visible units, which take the
real-valued data the checks generate (Bernoulli units refuse X outside [0, 1]).
"""

import pytest

import gpunet as gn

pytest.importorskip("sklearn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

FLOAT32_PREDICTIONS = (
    "gn estimators compute in their dtype, float32 unless dtype='float64' is asked for, and "
    "return predictions in it rather than widening them to float64 after the fact"
)
GAUSSIAN_SCORE = (
    "score_samples is the pseudo-likelihood, defined for Bernoulli visible units; a Gaussian "
    "RBM refuses it with a ValueError that points to free_energy and reconstruction_error"
)

ESTIMATORS = [
    gn.MLPClassifier((20,), learning_rate_init=0.01, max_iter=100, random_state=0),
    gn.MLPRegressor(
        hidden_layer_sizes=(20,), learning_rate_init=0.01, max_iter=100, random_state=0
    ),
    gn.DBN((4,), visible="gaussian", n_iter=2, random_state=0),
    gn.DBNClassifier(
        (8,),
        visible="gaussian",
        pretrain_n_iter=2,
        learning_rate_init=0.01,
        max_iter=100,
        random_state=0,
    ),  # fmt: skip
    gn.RBM(4, visible="gaussian", n_iter=2, random_state=0),
    gn.data.StandardScaler(),
    gn.data.MinMaxScaler(),
]


def expected_failures(estimator):
    if isinstance(estimator, gn.MLPRegressor):
        return {"check_regressor_multioutput": FLOAT32_PREDICTIONS}
    if isinstance(estimator, gn.RBM):
        return {
            "check_methods_sample_order_invariance": GAUSSIAN_SCORE,
            "check_methods_subset_invariance": GAUSSIAN_SCORE,
        }
    return {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=expected_failures)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)
