"""Evaluation protocols for image retrieval and multi-label classification.

Retrieval metrics take *rankings*: for each query, the database indices in rank
order, best match first. A ranking need not cover the whole database. Positives
that it does not contain count as never retrieved and lower the recall.
:func:`rank_by_similarity` turns a (n_queries, n_database) similarity matrix
into rankings.

Protocol facts shared by the retrieval metrics:

- Junk images are removed from a ranking before anything is counted, so they
  neither help nor hurt. The Oxford buildings and INRIA Holidays evaluation
  code does the same. Holidays also drops the query image itself from its own
  ranking: pass ``exclude_self=True`` to :func:`rank_by_similarity`, or list
  the query as junk.
- Average precision (AP) is the trapezoid area under the precision-recall
  curve, as in the Oxford ``compute_ap`` program and the revisited Oxford and
  Paris code of F. Radenovic et al., "Revisiting Oxford and Paris: Large-Scale
  Image Retrieval Benchmarking", CVPR 2018. The non-interpolated (step-wise)
  AP is available with ``method="step"``.
- A query without positives has no AP. The per-query functions return NaN for
  it, and the means exclude it.

Classification follows the PASCAL VOC 2007 devkit: 11-point interpolated AP per
class, averaged over classes. :data:`voc07_map_scorer` plugs it into
:class:`~sklearn.model_selection.GridSearchCV`.

Scoring a retrieval estimator
-----------------------------
A retrieval estimator's ``score`` can compute its (n_queries, n_database)
similarity matrix, call :func:`rank_by_similarity` and pass the rankings with
the per-query ground truth to :func:`mean_average_precision`,
:func:`recall_at_k`, :func:`revisited_map` or :func:`ukbench_score`. When the
ground truth is a class or group label per image, :func:`make_retrieval_scorer`
builds a scorer that uses every sample as a query against all samples, for
``GridSearchCV(..., scoring=make_retrieval_scorer("map"))``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from typing import Any

import numpy as np
import scipy.sparse
from numpy.typing import ArrayLike
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import make_scorer
from sklearn.utils._param_validation import Interval, StrOptions, validate_params
from sklearn.utils.validation import check_array, column_or_1d

__all__ = [
    "make_retrieval_scorer",
    "mean_average_precision",
    "rank_by_similarity",
    "recall_at_k",
    "retrieval_average_precision",
    "revisited_map",
    "ukbench_score",
    "voc07_average_precision",
    "voc07_map_scorer",
    "voc07_mean_average_precision",
]

# Number of relevant images per query in UKBench, and the depth it is scored at.
_UKBENCH_GROUP_SIZE = 4

# Ground-truth keys of one query in the revisited Oxford and Paris gnd pickles.
_REVISITED_KEYS = ("easy", "hard", "junk")


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


def _as_indices(values: ArrayLike, name: str, n_database: int | None) -> np.ndarray:
    """Convert database indices to a 1-D intp array, or raise ValueError."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D array of database indices, got an array of "
            f"shape {array.shape}."
        )
    if array.size == 0:
        return np.empty(0, dtype=np.intp)
    if array.dtype.kind == "b":
        raise ValueError(
            f"{name} must contain database indices, got a boolean array. Pass "
            "np.flatnonzero(mask) to turn a mask into indices."
        )
    if array.dtype.kind == "f" and np.all(np.isfinite(array)):
        if np.all(array == np.round(array)):
            array = array.astype(np.intp)
    if array.dtype.kind not in "iu":
        raise ValueError(
            f"{name} must contain integer database indices, got dtype "
            f"{array.dtype} with values such as {array[:3].tolist()}."
        )

    array = array.astype(np.intp, copy=False)
    if array.min() < 0:
        raise ValueError(
            f"{name} must contain indices >= 0, got {array[array < 0][0]}."
        )
    if n_database is not None and array.max() >= n_database:
        raise ValueError(
            f"{name} contains index {array.max()}, but the database has "
            f"n_database={n_database} images (valid indices 0 to {n_database - 1})."
        )
    return array


def _reject_duplicates(array: np.ndarray, name: str) -> None:
    values, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            f"{name} must list each database index once, but index "
            f"{values[counts > 1][0]} appears {counts[counts > 1][0]} times."
        )


def _as_rankings(rankings: Any, n_database: int | None) -> list[np.ndarray]:
    """Split rankings into per-query index arrays, checking each one."""
    if isinstance(rankings, np.ndarray) and rankings.ndim != 2:
        raise ValueError(
            "rankings must be a 2-D array of shape (n_queries, n_ranked) or a "
            f"sequence of 1-D rankings, got an array of shape {rankings.shape}. "
            "For a single query, use retrieval_average_precision."
        )
    if len(rankings) == 0:
        raise ValueError("rankings is empty. Pass at least one query's ranking.")
    result = []
    for query, ranking in enumerate(rankings):
        array = _as_indices(ranking, f"rankings[{query}]", n_database)
        _reject_duplicates(array, f"rankings[{query}]")
        result.append(array)
    return result


def _as_query_sets(
    values: Any,
    name: str,
    n_queries: int,
    n_database: int | None,
    *,
    unique: bool = False,
) -> list[np.ndarray]:
    """Split per-query positives or junk into index arrays, one per query.

    With ``unique=True`` an index listed twice for one query raises ValueError,
    because it would count twice in the number of positives.
    """
    if values is None:
        return [np.empty(0, dtype=np.intp)] * n_queries
    if len(values) != n_queries:
        raise ValueError(
            f"{name} must hold one index array per query: expected {n_queries} "
            f"(the number of rankings), got {len(values)}."
        )
    arrays = [
        _as_indices(item, f"{name}[{query}]", n_database)
        for query, item in enumerate(values)
    ]
    if unique:
        for query, array in enumerate(arrays):
            _reject_duplicates(array, f"{name}[{query}]")
    return arrays


def _reject_overlap(positives: np.ndarray, junk: np.ndarray, where: str) -> None:
    shared = np.intersect1d(positives, junk)
    if shared.size:
        raise ValueError(
            f"{where}: indices {shared[:5].tolist()} are listed both as positive "
            "and as junk. Each database image must be one or the other."
        )


def _warn_excluded(n_excluded: int, n_total: int, unit: str) -> None:
    if n_excluded:
        # stacklevel 4 skips this helper, the metric and the validate_params
        # wrapper, so the warning points at the caller's line.
        warnings.warn(
            f"{n_excluded} of {n_total} {unit} have no positives and were excluded "
            "from the mean.",
            UndefinedMetricWarning,
            stacklevel=4,
        )


# ---------------------------------------------------------------------------
# Retrieval: per-query core
# ---------------------------------------------------------------------------


def _positive_ranks(
    ranking: np.ndarray, positives: np.ndarray, junk: np.ndarray
) -> np.ndarray:
    """Return the 0-based ranks of the positives once junk is removed."""
    if junk.size:
        ranking = ranking[~np.isin(ranking, junk)]
    return np.flatnonzero(np.isin(ranking, positives))


def _average_precision(
    positive_ranks: np.ndarray, n_positives: int, method: str
) -> float:
    """Return AP from the sorted 0-based ranks of the retrieved positives."""
    # The positive at positive_ranks[i] has i positives ranked above it.
    n_above = np.arange(positive_ranks.size)
    precision_after = (n_above + 1) / (positive_ranks + 1)
    if method == "step":
        return float(precision_after.sum() / n_positives)

    # Precision just before the positive. It is 1 at rank 0 by convention.
    precision_before = np.ones(positive_ranks.size)
    later = positive_ranks > 0
    precision_before[later] = n_above[later] / positive_ranks[later]
    return float(((precision_before + precision_after) / 2).sum() / n_positives)


def _query_average_precision(
    ranking: np.ndarray,
    positives: np.ndarray,
    junk: np.ndarray,
    method: str,
    where: str,
) -> float:
    """Return the AP of one checked query, NaN if it has no positives."""
    _reject_overlap(positives, junk, where)
    if positives.size == 0:
        return float("nan")
    ranks = _positive_ranks(ranking, positives, junk)
    return _average_precision(ranks, positives.size, method)


# ---------------------------------------------------------------------------
# Retrieval: public metrics
# ---------------------------------------------------------------------------


@validate_params(
    {
        "ranking": ["array-like"],
        "positives": ["array-like"],
        "junk": ["array-like", None],
        "method": [StrOptions({"trapezoid", "step"})],
        "n_database": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def retrieval_average_precision(
    ranking: ArrayLike,
    positives: ArrayLike,
    junk: ArrayLike | None = None,
    *,
    method: str = "trapezoid",
    n_database: int | None = None,
) -> float:
    """Compute the average precision of one query's ranking.

    Parameters
    ----------
    ranking : array-like of shape (n_ranked,)
        Database indices in rank order, best match first, each at most once.
        It need not cover the database. Positives missing from it count as
        never retrieved.
    positives : array-like of shape (n_positives,)
        Database indices of the relevant images, each at most once.
    junk : array-like of shape (n_junk,), default=None
        Database indices to ignore. They are removed from the ranking before
        counting. An index may not be both positive and junk.
    method : {"trapezoid", "step"}, default="trapezoid"
        ``"trapezoid"`` is the area under the precision-recall curve by the
        trapezoid rule, as in the Oxford buildings and INRIA Holidays code.
        ``"step"`` is the non-interpolated AP: the mean over positives of the
        precision at each positive, 0 for positives never retrieved.
    n_database : int, default=None
        Number of database images. If given, every index must be below it.

    Returns
    -------
    float
        AP in [0, 1], or NaN when ``positives`` is empty.

    Notes
    -----
    After junk removal, let the positive with i positives above it sit at
    0-based rank r. It adds ``(p_before + p_after) / 2 / n_positives`` to the
    trapezoid AP, where ``p_before = i / r`` (1 when r = 0) and
    ``p_after = (i + 1) / (r + 1)``. The step AP adds ``p_after / n_positives``.

    Examples
    --------
    Junk at rank 0, positives at ranks 1 and 3, 2 positives in all:

    >>> from skcrosslayer.metrics import retrieval_average_precision
    >>> round(retrieval_average_precision([9, 0, 5, 1], [0, 1], junk=[9]), 4)
    0.7917
    >>> round(retrieval_average_precision([9, 0, 5, 1], [0, 1]), 4)
    0.3333
    >>> round(retrieval_average_precision([9, 0, 5, 1], [0, 1], [9], method="step"), 4)
    0.8333
    """
    ranking_array = _as_indices(ranking, "ranking", n_database)
    _reject_duplicates(ranking_array, "ranking")
    positive_array = _as_indices(positives, "positives", n_database)
    _reject_duplicates(positive_array, "positives")
    junk_array = _as_indices([] if junk is None else junk, "junk", n_database)
    return _query_average_precision(
        ranking_array, positive_array, junk_array, method, "ranking"
    )


@validate_params(
    {
        "rankings": ["array-like"],
        "positives": ["array-like"],
        "junk": ["array-like", None],
        "method": [StrOptions({"trapezoid", "step"})],
        "n_database": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def mean_average_precision(
    rankings: ArrayLike | Sequence[ArrayLike],
    positives: Sequence[ArrayLike],
    junk: Sequence[ArrayLike] | None = None,
    *,
    method: str = "trapezoid",
    n_database: int | None = None,
) -> float:
    """Compute the mean average precision (mAP) over queries.

    Parameters
    ----------
    rankings : array-like of shape (n_queries, n_ranked) or sequence of 1-D arrays
        One ranking per query, as in :func:`retrieval_average_precision`.
        Rankings may differ in length.
    positives : sequence of n_queries array-likes
        Database indices of each query's relevant images.
    junk : sequence of n_queries array-likes, default=None
        Database indices to ignore for each query.
    method : {"trapezoid", "step"}, default="trapezoid"
        AP rule, see :func:`retrieval_average_precision`.
    n_database : int, default=None
        Number of database images. If given, every index must be below it.

    Returns
    -------
    float
        Mean AP over the queries that have positives, NaN if none has.

    Warns
    -----
    UndefinedMetricWarning
        When queries without positives were excluded. The message gives their
        number.

    Examples
    --------
    Query 0 finds its positive first (AP 1). Query 1 finds it second, after one
    negative, so its trapezoid AP is (0 + 1/2) / 2 = 0.25.

    >>> from skcrosslayer.metrics import mean_average_precision
    >>> mean_average_precision([[0, 1, 2], [2, 1, 0]], positives=[[0], [1]])
    0.625
    """
    ranking_list = _as_rankings(rankings, n_database)
    n_queries = len(ranking_list)
    positive_list = _as_query_sets(
        positives, "positives", n_queries, n_database, unique=True
    )
    junk_list = _as_query_sets(junk, "junk", n_queries, n_database)

    aps = np.array(
        [
            _query_average_precision(
                ranking_list[query],
                positive_list[query],
                junk_list[query],
                method,
                f"query {query}",
            )
            for query in range(n_queries)
        ]
    )
    valid = ~np.isnan(aps)
    _warn_excluded(int(aps.size - valid.sum()), aps.size, "queries")
    if not valid.any():
        return float("nan")
    return float(aps[valid].mean())


@validate_params(
    {
        "rankings": ["array-like"],
        "positives": ["array-like"],
        "k": [Interval(Integral, 1, None, closed="left")],
        "junk": ["array-like", None],
        "n_database": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def recall_at_k(
    rankings: ArrayLike | Sequence[ArrayLike],
    positives: Sequence[ArrayLike],
    k: int,
    *,
    junk: Sequence[ArrayLike] | None = None,
    n_database: int | None = None,
) -> float:
    """Compute the fraction of queries with at least one positive in the top k.

    This is the usual retrieval recall@k (as in place recognition), not the
    fraction of a query's positives found in the top k.

    Parameters
    ----------
    rankings : array-like of shape (n_queries, n_ranked) or sequence of 1-D arrays
        One ranking per query, best match first.
    positives : sequence of n_queries array-likes
        Database indices of each query's relevant images.
    k : int
        Depth of the top of the ranking that is searched, counted after junk
        removal.
    junk : sequence of n_queries array-likes, default=None
        Database indices removed from each ranking before taking the top k.
    n_database : int, default=None
        Number of database images. If given, every index must be below it.

    Returns
    -------
    float
        Recall@k in [0, 1] over the queries that have positives, NaN if none
        has.

    Warns
    -----
    UndefinedMetricWarning
        When queries without positives were excluded.

    Examples
    --------
    >>> from skcrosslayer.metrics import recall_at_k
    >>> recall_at_k([[3, 0, 1], [2, 1, 0]], positives=[[0], [0]], k=2)
    0.5
    """
    ranking_list = _as_rankings(rankings, n_database)
    n_queries = len(ranking_list)
    positive_list = _as_query_sets(
        positives, "positives", n_queries, n_database, unique=True
    )
    junk_list = _as_query_sets(junk, "junk", n_queries, n_database)

    hits = np.full(n_queries, np.nan)
    for query in range(n_queries):
        _reject_overlap(positive_list[query], junk_list[query], f"query {query}")
        if positive_list[query].size == 0:
            continue
        ranks = _positive_ranks(
            ranking_list[query], positive_list[query], junk_list[query]
        )
        hits[query] = float(ranks.size > 0 and ranks[0] < k)

    valid = ~np.isnan(hits)
    _warn_excluded(int(n_queries - valid.sum()), n_queries, "queries")
    if not valid.any():
        return float("nan")
    return float(hits[valid].mean())


def _official_precision_at_k(positive_ranks: np.ndarray, ks: np.ndarray) -> np.ndarray:
    """Return the revisited-protocol precision at each k (see revisited_map)."""
    if positive_ranks.size == 0:
        return np.zeros(ks.size)
    ranks_1based = positive_ranks + 1
    # The depth shrinks to the rank of the last retrieved positive.
    depths = np.minimum(ranks_1based.max(), ks)
    return np.array([(ranks_1based <= d).sum() / d for d in depths])


def _revisited_setting(entry: Mapping, setting: str) -> tuple[list, list]:
    """Return the positives and junk of one query in one revisited setting."""
    if setting == "easy":
        return [entry["easy"]], [entry["junk"], entry["hard"]]
    if setting == "medium":
        return [entry["easy"], entry["hard"]], [entry["junk"]]
    return [entry["hard"]], [entry["junk"], entry["easy"]]


def _check_revisited_gnd(gnd: Sequence, n_database: int | None) -> list[dict]:
    """Convert each query's easy, hard and junk lists, checking they are disjoint."""
    checked = []
    for query, entry in enumerate(gnd):
        if not isinstance(entry, Mapping):
            raise ValueError(
                f"gnd[{query}] must be a dict with keys 'easy', 'hard' and 'junk', "
                f"got {type(entry).__name__}."
            )
        missing = [key for key in _REVISITED_KEYS if key not in entry]
        if missing:
            raise ValueError(
                f"gnd[{query}] is missing the keys {missing}. Each query needs "
                "'easy', 'hard' and 'junk', as in cfg['gnd'] of the official "
                "gnd_roxford5k.pkl and gnd_rparis6k.pkl files."
            )
        arrays = {
            key: _as_indices(entry[key], f"gnd[{query}]['{key}']", n_database)
            for key in _REVISITED_KEYS
        }
        _reject_duplicates(arrays["easy"], f"gnd[{query}]['easy']")
        _reject_duplicates(arrays["hard"], f"gnd[{query}]['hard']")
        for first, second in (("easy", "hard"), ("easy", "junk"), ("hard", "junk")):
            shared = np.intersect1d(arrays[first], arrays[second])
            if shared.size:
                raise ValueError(
                    f"gnd[{query}]: indices {shared[:5].tolist()} are in both "
                    f"'{first}' and '{second}'. The three lists must be disjoint."
                )
        checked.append(arrays)
    return checked


def _evaluate_revisited_setting(
    ranking_list: list[np.ndarray], entries: list[dict], setting: str, ks: np.ndarray
) -> dict[str, Any]:
    """Return the AP and precision at each k of every query, and their means."""
    aps = np.full(len(entries), np.nan)
    precisions = np.full((len(entries), ks.size), np.nan)
    for query, entry in enumerate(entries):
        positive_parts, junk_parts = _revisited_setting(entry, setting)
        positives = np.concatenate(positive_parts)
        if positives.size == 0:
            continue
        ranks = _positive_ranks(
            ranking_list[query], positives, np.concatenate(junk_parts)
        )
        aps[query] = _average_precision(ranks, positives.size, "trapezoid")
        precisions[query] = _official_precision_at_k(ranks, ks)

    valid = ~np.isnan(aps)
    if valid.any():
        mean_ap = float(aps[valid].mean())
        mean_precisions = precisions[valid].mean(axis=0)
    else:
        mean_ap = float("nan")
        mean_precisions = np.full(ks.size, np.nan)
    return {
        "map": mean_ap,
        "mp_at_k": {int(k): float(p) for k, p in zip(ks, mean_precisions, strict=True)},
        "ap": aps,
        "p_at_k": precisions,
        "n_excluded": int(aps.size - valid.sum()),
    }


@validate_params(
    {
        "rankings": ["array-like"],
        "gnd": ["array-like"],
        "ks": ["array-like"],
        "n_database": [Interval(Integral, 1, None, closed="left"), None],
    },
    prefer_skip_nested_validation=True,
)
def revisited_map(
    rankings: ArrayLike | Sequence[ArrayLike],
    gnd: Sequence[Mapping[str, ArrayLike]],
    ks: Sequence[int] = (1, 5, 10),
    *,
    n_database: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate the revisited Oxford and Paris protocol (Easy, Medium, Hard).

    The protocol is that of F. Radenovic, A. Iscen, G. Tolias, Y. Avrithis and
    O. Chum, "Revisiting Oxford and Paris: Large-Scale Image Retrieval
    Benchmarking", CVPR 2018. Per query:

    - Easy: positives = easy, junk = junk + hard.
    - Medium: positives = easy + hard, junk = junk.
    - Hard: positives = hard, junk = junk + easy.

    Parameters
    ----------
    rankings : array-like of shape (n_queries, n_ranked) or sequence of 1-D arrays
        One ranking per query, best match first. The official ``ranks`` array
        has shape (n_database, n_queries), so pass ``ranks.T``.
    gnd : sequence of n_queries dicts
        Ground truth per query with keys ``'easy'``, ``'hard'`` and ``'junk'``
        (database indices), as in ``cfg['gnd']`` of the official pickle. Other
        keys, such as ``'bbx'``, are ignored. The three lists must be disjoint.
    ks : sequence of int, default=(1, 5, 10)
        Depths at which the mean precision mP@k is reported.
    n_database : int, default=None
        Number of database images. If given, every index must be below it.

    Returns
    -------
    dict
        Keys ``"easy"``, ``"medium"`` and ``"hard"``, each a dict with:

        - ``"map"``: float, mean AP over the queries with positives.
        - ``"mp_at_k"``: dict mapping each k to the mean precision at k.
        - ``"ap"``: ndarray of shape (n_queries,), NaN for excluded queries.
        - ``"p_at_k"``: ndarray of shape (n_queries, len(ks)).
        - ``"n_excluded"``: int, the number of queries without positives in
          this setting. They are left out of both means, without a warning.

    Notes
    -----
    AP is the trapezoid rule of :func:`retrieval_average_precision`.

    Precision at k follows the official ``compute_map`` code, which is not the
    plain fraction of positives in the top k. Take the 1-based ranks of the
    retrieved positives after junk removal and let ``d = min(k, last rank)``.
    Then P@k is the number of positives at rank <= d, divided by d. So when all
    retrieved positives sit above rank k, the depth shrinks: two positives at
    ranks 1 and 2 give P@5 = 1, not 0.4. A query whose ranking contains none of
    its positives gets P@k = 0. This case cannot occur in the official code,
    which ranks the whole database.

    Examples
    --------
    >>> from skcrosslayer.metrics import revisited_map
    >>> gnd = [{"easy": [0], "hard": [2], "junk": [1]}]
    >>> result = revisited_map([[0, 3, 1, 2]], gnd, ks=(1, 5))
    >>> result["easy"]["map"], result["hard"]["map"]
    (1.0, 0.25)

    Medium keeps [0, 3, 2] after junk removal: positives at 1-based ranks 1 and
    3, so P@5 uses depth 3 and is 2/3.

    >>> round(result["medium"]["map"], 4), round(result["medium"]["mp_at_k"][5], 4)
    (0.7917, 0.6667)
    """
    ks_array = np.asarray(ks)
    if ks_array.ndim != 1 or ks_array.dtype.kind not in "iu" or np.any(ks_array < 1):
        raise ValueError(
            f"ks must be a 1-D sequence of integers >= 1, got {ks!r}. "
            "The official protocol reports ks=(1, 5, 10)."
        )
    ranking_list = _as_rankings(rankings, n_database)
    if len(gnd) != len(ranking_list):
        raise ValueError(
            f"gnd must hold one dict per query: expected {len(ranking_list)} (the "
            f"number of rankings), got {len(gnd)}."
        )
    entries = _check_revisited_gnd(gnd, n_database)

    return {
        setting: _evaluate_revisited_setting(ranking_list, entries, setting, ks_array)
        for setting in ("easy", "medium", "hard")
    }


@validate_params(
    {
        "rankings": ["array-like"],
        "groups": ["array-like"],
        "query_indices": ["array-like", None],
    },
    prefer_skip_nested_validation=True,
)
def ukbench_score(
    rankings: ArrayLike | Sequence[ArrayLike],
    groups: ArrayLike,
    *,
    query_indices: ArrayLike | None = None,
) -> float:
    """Compute the UKBench score: relevant images in the top 4, averaged.

    UKBench (D. Nister and H. Stewenius, CVPR 2006) has groups of 4 images of
    one object, and every image is a query. The query stays in the database,
    so it is one of its own 4 relevant images.

    Parameters
    ----------
    rankings : array-like of shape (n_queries, n_ranked) or sequence of 1-D arrays
        One ranking per query, best match first. Only the first 4 entries are
        read and checked. Shorter rankings count the missing places as misses.
    groups : array-like of shape (n_database,)
        Group label of each database image.
    query_indices : array-like of shape (n_queries,), default=None
        Database index of each query. None means that query i is database
        image i, and then there must be one ranking per database image.

    Returns
    -------
    float
        Mean number of same-group images among the top 4, in [0, 4].

    Raises
    ------
    ValueError
        If a query's group does not contain exactly 4 database images.

    Examples
    --------
    Seven perfect queries and one with 3 of its group in the top 4:

    >>> from skcrosslayer.metrics import ukbench_score
    >>> groups = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> rankings = [[0, 1, 2, 3]] * 4 + [[4, 5, 6, 7]] * 4
    >>> rankings[0] = [0, 1, 4, 2]
    >>> ukbench_score(rankings, groups)
    3.875
    """
    group_labels = column_or_1d(groups)
    n_database = group_labels.shape[0]
    # Only the top 4 places count, so only they are checked.
    top = [
        ranking[:_UKBENCH_GROUP_SIZE] if ranking.ndim == 1 else ranking
        for ranking in map(np.asarray, rankings)
    ]
    top = _as_rankings(top, n_database)
    n_rankings = len(top)
    if query_indices is None:
        if n_rankings != n_database:
            raise ValueError(
                f"Expected one ranking per database image ({n_database}), got "
                f"{n_rankings}. Pass query_indices to score a subset of queries."
            )
        queries = np.arange(n_database)
    else:
        queries = _as_indices(query_indices, "query_indices", n_database)
        if queries.size != n_rankings:
            raise ValueError(
                f"query_indices must hold one database index per ranking: expected "
                f"{n_rankings}, got {queries.size}."
            )

    _, group_ids, group_sizes = np.unique(
        group_labels, return_inverse=True, return_counts=True
    )
    query_group_sizes = group_sizes[group_ids[queries]]
    if np.any(query_group_sizes != _UKBENCH_GROUP_SIZE):
        query = int(np.flatnonzero(query_group_sizes != _UKBENCH_GROUP_SIZE)[0])
        raise ValueError(
            f"UKBench groups have {_UKBENCH_GROUP_SIZE} images each, but the group "
            f"{group_labels[queries[query]]} of query {query} has "
            f"{query_group_sizes[query]}."
        )

    scores = [
        np.sum(group_ids[ranking] == group_ids[query])
        for ranking, query in zip(top, queries, strict=True)
    ]
    return float(np.mean(scores))


# ---------------------------------------------------------------------------
# Rankings from similarities, and a label-based retrieval scorer
# ---------------------------------------------------------------------------


@validate_params(
    {"similarities": ["array-like"], "exclude_self": ["boolean"]},
    prefer_skip_nested_validation=True,
)
def rank_by_similarity(
    similarities: ArrayLike, exclude_self: bool = False
) -> np.ndarray:
    """Rank the database for each query by decreasing similarity.

    Parameters
    ----------
    similarities : array-like of shape (n_queries, n_database)
        Similarity of each query to each database image, higher is closer.
        Values must be finite. Integer similarities, such as Hamming-based
        scores of binary codes, are ranked without conversion.
    exclude_self : bool, default=False
        If True, query i is database image i and is removed from its own
        ranking, as the INRIA Holidays protocol requires. Needs
        n_queries <= n_database.

    Returns
    -------
    ndarray of shape (n_queries, n_database) or (n_queries, n_database - 1)
        Database indices, best match first. Ties keep the lower index first.

    Examples
    --------
    >>> from skcrosslayer.metrics import rank_by_similarity
    >>> rank_by_similarity([[0.1, 0.9, 0.9, 0.5]])
    array([[1, 2, 3, 0]])
    >>> rank_by_similarity([[1.0, 0.2, 0.7], [0.4, 1.0, 0.6]], exclude_self=True)
    array([[2, 1],
           [2, 0]])
    """
    scores = check_array(
        similarities, dtype="numeric", ensure_all_finite=True, input_name="similarities"
    )
    n_queries, n_database = scores.shape
    if exclude_self and n_queries > n_database:
        raise ValueError(
            f"exclude_self=True treats query i as database image i, so it needs "
            f"n_queries <= n_database, got similarities of shape {scores.shape}."
        )

    # A stable ascending sort of the reversed columns, read backwards, sorts by
    # decreasing score with ties in increasing index. Negating the scores
    # instead would fail for unsigned integers.
    reversed_order = np.argsort(scores[:, ::-1], axis=1, kind="stable")[:, ::-1]
    order = n_database - 1 - reversed_order
    if not exclude_self:
        return order
    keep = order != np.arange(n_queries)[:, None]
    # (n_queries, n_database - 1)
    return order[keep].reshape(n_queries, n_database - 1)


class _LabelRetrievalScorer:
    """Scorer that uses every sample as a query against all samples."""

    def __init__(self, metric: str, k: int, similarity: Callable | None):
        self.metric = metric
        self.k = k
        self.similarity = similarity

    def __repr__(self) -> str:
        return f"make_retrieval_scorer(metric={self.metric!r}, k={self.k})"

    def _similarities(self, estimator, X) -> np.ndarray:
        if self.similarity is not None:
            return np.asarray(self.similarity(estimator, X))
        codes = estimator.transform(X)
        # float64, because inner products of int8 sign codes overflow int8.
        if scipy.sparse.issparse(codes):
            codes = codes.astype(np.float64)
            return (codes @ codes.T).toarray()
        codes = np.asarray(codes, dtype=np.float64)
        return codes @ codes.T

    def __call__(self, estimator, X, y) -> float:
        if y is None:
            raise ValueError(
                "A retrieval scorer needs y: the class or group label of each "
                "sample. Samples with equal labels are relevant to each other."
            )
        labels = column_or_1d(y)
        similarities = self._similarities(estimator, X)
        if similarities.shape != (labels.size, labels.size):
            raise ValueError(
                f"Expected a ({labels.size}, {labels.size}) similarity matrix for "
                f"{labels.size} samples, got shape {similarities.shape}."
            )

        if self.metric == "ukbench":
            return ukbench_score(rank_by_similarity(similarities), labels)

        rankings = rank_by_similarity(similarities, exclude_self=True)
        samples = np.arange(labels.size)
        positives = [
            np.flatnonzero((labels == labels[query]) & (samples != query))
            for query in samples
        ]
        if self.metric == "map":
            return mean_average_precision(rankings, positives)
        return recall_at_k(rankings, positives, self.k)


@validate_params(
    {
        "metric": [StrOptions({"map", "recall_at_k", "ukbench"})],
        "k": [Interval(Integral, 1, None, closed="left")],
        "similarity": [callable, None],
    },
    prefer_skip_nested_validation=True,
)
def make_retrieval_scorer(
    metric: str = "map", *, k: int = 1, similarity: Callable | None = None
) -> Callable[[Any, Any, ArrayLike], float]:
    """Build a scorer that evaluates retrieval among labelled samples.

    The scorer has the signature ``scorer(estimator, X, y)`` that
    :class:`~sklearn.model_selection.GridSearchCV` and
    :func:`~sklearn.model_selection.cross_val_score` accept. Every sample of
    ``X`` is a query against all samples of ``X``, and samples with the same
    label in ``y`` are relevant to each other.

    Parameters
    ----------
    metric : {"map", "recall_at_k", "ukbench"}, default="map"
        ``"map"`` and ``"recall_at_k"`` drop each query from its own ranking
        and use :func:`mean_average_precision` (trapezoid AP) or
        :func:`recall_at_k`. ``"ukbench"`` keeps the query in its ranking and
        uses :func:`ukbench_score`, so every label must occur exactly 4 times
        in each evaluated fold, for example with ``cv=GroupKFold()`` and
        ``groups=y`` passed to ``fit``.
    k : int, default=1
        Depth for ``metric="recall_at_k"``. Other metrics ignore it.
    similarity : callable, default=None
        ``similarity(estimator, X)`` returning the (n_samples, n_samples)
        similarity matrix. None uses the inner products of
        ``estimator.transform(X)``. That is the cosine similarity for
        l2-normalised codes, and ``n_bits - 2 * Hamming distance`` for
        +-1 codes.

    Returns
    -------
    callable
        The scorer. Higher is better.

    Warns
    -----
    UndefinedMetricWarning
        From ``"map"`` and ``"recall_at_k"`` when some sample has no other
        sample with its label in the fold, so it is excluded.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.preprocessing import FunctionTransformer
    >>> from skcrosslayer.metrics import make_retrieval_scorer
    >>> X = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> scorer = make_retrieval_scorer("map")
    >>> scorer(FunctionTransformer().fit(X), X, [0, 0, 1, 1])
    1.0
    """
    return _LabelRetrievalScorer(metric, k, similarity)


# ---------------------------------------------------------------------------
# PASCAL VOC 2007 classification
# ---------------------------------------------------------------------------


def _check_voc_labels(y_true: np.ndarray) -> None:
    values = np.unique(y_true)
    if values.dtype.kind not in "biuf" or not np.all(np.isin(values, (-1, 0, 1))):
        raise ValueError(
            "y_true must hold 1 for positives and 0 or -1 for negatives, got "
            f"values {values[:10].tolist()}."
        )
    if -1 in values and 0 in values:
        raise ValueError(
            "y_true contains both 0 and -1, which looks like VOC devkit labels, "
            "where 0 marks a difficult sample. Pass y_true=labels > 0 and "
            "difficult=labels == 0 instead."
        )


def _voc07_ap(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """Return the 11-point AP of one class, NaN if there is no positive."""
    n_positives = int(is_positive.sum())
    if n_positives == 0:
        return float("nan")

    # Decreasing score, ties in sample order like the devkit's stable sort.
    order = np.argsort(-scores, kind="stable")
    true_positives = np.cumsum(is_positive[order])
    precision = true_positives / np.arange(1, order.size + 1)

    # recall >= t / 10 is tested as 10 * tp >= t * n_positives, exactly.
    thresholds = np.arange(11)
    reached = 10 * true_positives[None, :] >= thresholds[:, None] * n_positives
    # (11, n_samples): the precision where recall reaches each threshold, else 0
    best = np.where(reached, precision[None, :], 0.0).max(axis=1)
    return float(best.mean())


def _check_voc_inputs(y_true, y_score, difficult, ndim: int):
    """Validate VOC labels, scores and difficult flags of the same shape."""
    labels = check_array(y_true, ensure_2d=False, dtype=None, input_name="y_true")
    scores = check_array(
        y_score, ensure_2d=False, dtype=np.float64, input_name="y_score"
    )
    if labels.ndim != ndim:
        raise ValueError(
            f"y_true must be {ndim}-D, got shape {labels.shape}. Use "
            "voc07_average_precision for one class and "
            "voc07_mean_average_precision for a (n_samples, n_classes) matrix."
        )
    if scores.shape != labels.shape:
        raise ValueError(
            f"y_score must have the shape of y_true {labels.shape}, got {scores.shape}."
        )
    _check_voc_labels(labels)
    labels = labels.astype(np.int64)

    if difficult is None:
        return labels > 0, scores, np.zeros(labels.shape, dtype=bool)
    flags = np.asarray(difficult)
    if flags.dtype.kind != "b" or flags.shape != labels.shape:
        raise ValueError(
            f"difficult must be a boolean array of shape {labels.shape}, got "
            f"dtype {flags.dtype} and shape {flags.shape}."
        )
    return labels > 0, scores, flags


_VOC_CONSTRAINTS = {
    "y_true": ["array-like"],
    "y_score": ["array-like"],
    "difficult": ["array-like", None],
}


@validate_params(_VOC_CONSTRAINTS, prefer_skip_nested_validation=True)
def voc07_average_precision(
    y_true: ArrayLike, y_score: ArrayLike, *, difficult: ArrayLike | None = None
) -> float:
    """Compute the 11-point interpolated AP of the PASCAL VOC 2007 devkit.

    AP is the mean over t = 0, 0.1, ..., 1 of the maximum precision at any
    rank whose recall is >= t, and 0 for a t that no rank reaches.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        1 for a positive, 0 or -1 for a negative. This matches scikit-learn's
        indicator labels, not the devkit's, where 0 marks a difficult sample.
        Convert devkit labels with ``y_true=labels > 0`` and
        ``difficult=labels == 0``. Labels that contain both 0 and -1 raise
        ValueError for that reason.
    y_score : array-like of shape (n_samples,)
        Classifier scores, higher for more confident positives, such as the
        output of ``decision_function``.
    difficult : array-like of bool, shape (n_samples,), default=None
        Samples to ignore, as the devkit ignores difficult images. None
        evaluates every sample.

    Returns
    -------
    float
        AP in [0, 1], or NaN with an UndefinedMetricWarning when no
        evaluated sample is positive.

    Notes
    -----
    Samples are sorted by decreasing score, and tied scores keep the sample
    order, as the stable MATLAB ``sort(-out)`` in the devkit's VOCevalcls.m
    does. Recall thresholds
    are compared exactly (10 * tp >= t * n_positives). Ports that build the
    thresholds in floating point, such as ``np.arange(0, 1.1, 0.1)``, put
    3 * 0.1 slightly above 0.3, so they can differ when a recall equals a
    threshold exactly. The devkit returns 0, not NaN, for a class without
    positives.

    Examples
    --------
    Positives at ranks 1 and 3 of 4: precision 1 up to recall 0.5, then 2/3.

    >>> from skcrosslayer.metrics import voc07_average_precision
    >>> round(voc07_average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1]), 4)
    0.8485
    """
    is_positive, scores, flags = _check_voc_inputs(y_true, y_score, difficult, 1)
    ap = _voc07_ap(is_positive[~flags], scores[~flags])
    if np.isnan(ap):
        warnings.warn(
            "No evaluated sample is positive, so the VOC07 AP is undefined and "
            "NaN is returned.",
            UndefinedMetricWarning,
            stacklevel=3,
        )
    return ap


@validate_params(_VOC_CONSTRAINTS, prefer_skip_nested_validation=True)
def voc07_mean_average_precision(
    y_true: ArrayLike, y_score: ArrayLike, *, difficult: ArrayLike | None = None
) -> float:
    """Compute the VOC 2007 mean of the 11-point AP over classes.

    Parameters
    ----------
    y_true : array-like of shape (n_samples, n_classes)
        Label indicator matrix: 1 for a positive, 0 or -1 for a negative, as
        in :func:`voc07_average_precision`.
    y_score : array-like of shape (n_samples, n_classes)
        Scores, such as ``OneVsRestClassifier(...).decision_function(X)``.
    difficult : array-like of bool, shape (n_samples, n_classes), default=None
        Sample and class pairs to ignore.

    Returns
    -------
    float
        Mean AP over the classes with at least one positive, NaN if none has.

    Warns
    -----
    UndefinedMetricWarning
        When classes without positives were excluded.

    Examples
    --------
    >>> from skcrosslayer.metrics import voc07_mean_average_precision
    >>> y_true = [[1, 0], [0, 1], [1, 0], [0, 0]]
    >>> y_score = [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]]
    >>> round(voc07_mean_average_precision(y_true, y_score), 4)
    0.5909
    """
    is_positive, scores, flags = _check_voc_inputs(y_true, y_score, difficult, 2)
    n_classes = is_positive.shape[1]
    aps = np.array(
        [
            _voc07_ap(is_positive[~flags[:, c], c], scores[~flags[:, c], c])
            for c in range(n_classes)
        ]
    )
    valid = ~np.isnan(aps)
    _warn_excluded(int(n_classes - valid.sum()), n_classes, "classes")
    if not valid.any():
        return float("nan")
    return float(aps[valid].mean())


#: Scorer for multi-label classifiers: the VOC 2007 mAP of ``decision_function``
#: on an indicator matrix ``y``, for ``GridSearchCV(OneVsRestClassifier(
#: LinearSVC()), ..., scoring=voc07_map_scorer)``. It treats every sample as
#: non-difficult, so call :func:`voc07_mean_average_precision` with
#: ``difficult`` for the final test-set number.
voc07_map_scorer = make_scorer(
    voc07_mean_average_precision, response_method="decision_function"
)
