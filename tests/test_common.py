"""scikit-learn's estimator checks on every estimator of the package.

CrossLayerPooler, GlobalPooler and FullyConnectedPooler take images, not tables of numbers; the
checks that fit them on a 2-D numeric table cannot pass and are listed below
with the reason. They run on AlexNet with random weights at 64 px, where a
trained network adds nothing.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from skcrosslayer import (
    CrossLayerPooler,
    FeatureBinarizer,
    FullyConnectedPooler,
    GlobalPooler,
    ImageRetriever,
    PCAWhitening,
    RegionalCrossLayerPooler,
    SignQuantizer,
)

TABLE_INPUT = (
    "X must be a sequence of images; this check fits on a 2-D table of numbers, "
    "which is rejected with a ValueError naming the expected input"
)

# Checks that pass a 2-D numeric table as X to fit or transform.
IMAGE_ESTIMATOR_FAILURES = {
    name: TABLE_INPUT
    for name in [
        "check_complex_data",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_empty_data_messages",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1feature",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
    ]
}


def expected_failed_checks(estimator):
    image_estimators = (
        CrossLayerPooler,
        GlobalPooler,
        FullyConnectedPooler,
        RegionalCrossLayerPooler,
    )
    if isinstance(estimator, image_estimators):
        return IMAGE_ESTIMATOR_FAILURES
    return {}


TINY = dict(backbone="alexnet", weights=None, image_size=64, n_workers=0)


@parametrize_with_checks(
    [
        CrossLayerPooler(**TINY, random_state=0),
        GlobalPooler(**TINY),
        FullyConnectedPooler(**TINY),
        RegionalCrossLayerPooler(
            backbone="alexnet",
            weights=None,
            image_size=64,
            region_size=32,
            region_stride=32,
            region_input_size=64,
            n_components=4,
            n_filters=2,
            n_epochs=1,
            n_workers=0,
            random_state=0,
        ),
        SignQuantizer(),
        PCAWhitening(),
        PCAWhitening(n_components=1, power=0.5, normalize=False),
        FeatureBinarizer(),
        FeatureBinarizer(output="dense"),
        FeatureBinarizer(block_size=1),
        ImageRetriever(),
        ImageRetriever(block_size=1, mode="symmetric"),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
