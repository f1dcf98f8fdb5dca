"""scikit-learn's estimator checks on every estimator of the package.

The image transformers (CrossLayerPooler, GlobalPooler, FullyConnectedPooler,
RegionalCrossLayerPooler) take images, not tables of numbers, so the checks
that fit them on a 2-D numeric table cannot pass. ChannelSelector needs
K * (d + 1) columns. Both lists are below, with the reason. They run on AlexNet with random weights at 64 px, where a
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
from skcrosslayer.selection import ChannelSelector, SelectedChannelRetriever

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


# Number of columns of the table each scikit-learn check fits on (version 1.9).
# ChannelSelector accepts K * (d + 1) columns only, so every check runs on the
# instance with d = 1 or the one with d = 2, except the 5-column check. The
# query-mode exception to the fit_transform rule needs K >= 2 channels and is
# tested on 6 columns in test_selection.py.
CHECK_WIDTHS = {
    2: [
        "check_estimators_overwrite_params",
        "check_estimators_fit_returns_self",
        "check_readonly_memmap_input",
        "check_fit_idempotent",
        "check_fit_check_is_fitted",
        "check_n_features_in",
    ],
    3: [
        "check_fit_score_takes_y",
        "check_dont_overwrite_parameters",
        "check_pipeline_consistency",
        "check_estimators_nan_inf",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_transformer_data_not_an_array",
        "check_transformer_general",
        "check_transformer_preserve_dtypes",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_dict_unchanged",
        "check_fit2d_predict1d",
    ],
    4: ["check_n_features_in_after_fitting", "check_positive_only_tag_during_fit"],
    5: ["check_estimators_dtypes"],
    10: ["check_dtype_object", "check_fit2d_1sample"],
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
    if isinstance(estimator, ChannelSelector):
        columns_per_channel = estimator.block_size + 1
        return {
            name: (
                f"fits on {width} columns, which are not K * (d + 1) columns for "
                f"d = {estimator.block_size}"
            )
            for width, names in CHECK_WIDTHS.items()
            if width % columns_per_channel != 0
            for name in names
        }
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
        ChannelSelector(1, block_size=1),
        ChannelSelector(1, block_size=2),
        ChannelSelector(1, mode="symmetric", block_size=1),
        ChannelSelector(1, mode="symmetric", block_size=2),
        ChannelSelector(None, block_size=2),
        SelectedChannelRetriever(block_size=1),
        SelectedChannelRetriever(block_size=1, mode="symmetric"),
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
