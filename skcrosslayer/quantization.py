"""SignQuantizer: ternary sign codes of pooled vectors."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import validate_data

__all__ = ["SignQuantizer", "sign_quantize"]


def sign_quantize(X: np.ndarray) -> np.ndarray:
    """Return the sign of every element of ``X`` as int8 (-1, 0 or +1)."""
    return np.sign(X).astype(np.int8)


class SignQuantizer(TransformerMixin, BaseEstimator):
    """Replace every feature by its sign: -1, 0 or +1, stored as int8.

    Feature sign quantisation keeps 2 bits of information per dimension
    (16 times less than float32). Because the normalisations of
    :class:`CrossLayerPooler` are positive rescalings per block and per vector
    and the signed square root keeps signs, the codes do not depend on which
    normalisation steps ran. Liu, Shen and van den Hengel (TPAMI 2017, Table 9)
    report 77.9 against 78.2 accuracy on MIT-67 with a linear SVM.

    The transformer is stateless: ``fit`` only records the input width.

    Attributes
    ----------
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Set when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from skcrosslayer import SignQuantizer
    >>> SignQuantizer().fit_transform(np.array([[0.5, -2.0, 0.0]]))
    array([[ 1, -1,  0]], dtype=int8)
    """

    def fit(self, X, y=None):
        """Record the number of features of ``X``.

        Returns
        -------
        self : SignQuantizer
        """
        validate_data(self, X, accept_sparse=False, dtype="numeric")
        return self

    def transform(self, X) -> np.ndarray:
        """Return the int8 signs of ``X``, of the same shape."""
        X = validate_data(
            self, X, reset=False, dtype=[np.float64, np.float32, np.float16]
        )
        return sign_quantize(X)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Return the input feature names: signs keep each column's meaning."""
        from sklearn.utils.validation import _check_feature_names_in

        return _check_feature_names_in(self, input_features)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.transformer_tags.preserves_dtype = []
        return tags
