"""Tests for skcrosslayer.metrics: hand-worked protocol values and slow references."""

import warnings
from fractions import Fraction

import numpy as np
import pytest
import scipy.sparse
from sklearn.datasets import make_multilabel_classification
from sklearn.decomposition import PCA
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.model_selection import (
    GridSearchCV,
    GroupKFold,
    KFold,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import FunctionTransformer
from sklearn.svm import LinearSVC

from skcrosslayer.metrics import (
    make_retrieval_scorer,
    mean_average_precision,
    rank_by_similarity,
    recall_at_k,
    retrieval_average_precision,
    revisited_map,
    ukbench_score,
    voc07_average_precision,
    voc07_map_scorer,
    voc07_mean_average_precision,
)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


# ---------------------------------------------------------------------------
# Slow references, written as plain loops
# ---------------------------------------------------------------------------


def reference_trapezoid_ap(ranking, positives, junk=()):
    """Sum trapezoids of the precision-recall curve, one per non-junk item."""
    positives, junk = set(positives), set(junk)
    if not positives:
        return float("nan")
    area, n_found, n_seen = 0.0, 0, 0
    previous_recall, previous_precision = 0.0, 1.0
    for index in ranking:
        if index in junk:
            continue
        n_seen += 1
        n_found += index in positives
        recall = n_found / len(positives)
        precision = n_found / n_seen
        area += (recall - previous_recall) * (previous_precision + precision) / 2
        previous_recall, previous_precision = recall, precision
    return area


def reference_step_ap(ranking, positives, junk=()):
    positives, junk = set(positives), set(junk)
    total, n_found, n_seen = 0.0, 0, 0
    for index in ranking:
        if index in junk:
            continue
        n_seen += 1
        if index in positives:
            n_found += 1
            total += n_found / n_seen
    return total / len(positives)


def reference_official_precision(ranking, positives, junk, k):
    """Precision at k with the depth rule of the revisited Oxford/Paris code."""
    kept = [index for index in ranking if index not in set(junk)]
    ranks = [rank + 1 for rank, index in enumerate(kept) if index in set(positives)]
    if not ranks:
        return 0.0
    depth = min(max(ranks), k)
    return sum(rank <= depth for rank in ranks) / depth


def reference_voc07_ap(labels, scores, difficult=None):
    """11-point AP with exact fractions and a sort by (-score, sample index)."""
    if difficult is None:
        difficult = [False] * len(labels)
    samples = [i for i in range(len(labels)) if not difficult[i]]
    samples.sort(key=lambda i: (-scores[i], i))
    n_positives = sum(labels[i] > 0 for i in samples)
    recalls, precisions, n_found = [], [], 0
    for rank, i in enumerate(samples, start=1):
        n_found += labels[i] > 0
        recalls.append(Fraction(n_found, n_positives))
        precisions.append(Fraction(n_found, rank))
    total = Fraction(0)
    for t in range(11):
        threshold = Fraction(t, 10)
        reached = [
            p for r, p in zip(recalls, precisions, strict=True) if r >= threshold
        ]
        total += max(reached, default=Fraction(0))
    return float(total / 11)


def random_query(rng, n_database=30):
    """Draw a partial ranking with disjoint positives and junk."""
    images = rng.permutation(n_database)
    n_positives, n_junk = rng.integers(1, 8), rng.integers(0, 5)
    positives = images[:n_positives]
    junk = images[n_positives : n_positives + n_junk]
    ranking = rng.permutation(n_database)[: rng.integers(0, n_database + 1)]
    return ranking, positives, junk


# ---------------------------------------------------------------------------
# Average precision of one query
# ---------------------------------------------------------------------------


def test_ap_worked_example_three_rules():
    # Ranking [junk, pos, neg, pos], 2 positives in all.
    # Junk removed: positives at ranks 0 and 2.
    #   trapezoid: (1 + (1/2 + 2/3) / 2) / 2 = 19/24 = 0.79166...
    #   step:      (1 + 2/3) / 2 = 5/6 = 0.8333...
    # Junk counted as a negative: positives at ranks 1 and 3.
    #   trapezoid: ((0 + 1/2) / 2 + (1/3 + 2/4) / 2) / 2 = 1/3
    ranking, positives, junk = [7, 0, 5, 1], [0, 1], [7]

    assert retrieval_average_precision(ranking, positives, junk) == pytest.approx(
        19 / 24
    )
    assert round(retrieval_average_precision(ranking, positives, junk), 4) == 0.7917
    assert retrieval_average_precision(ranking, positives) == pytest.approx(1 / 3)
    assert retrieval_average_precision(
        ranking, positives, junk, method="step"
    ) == pytest.approx(5 / 6)


def test_ap_unretrieved_positive_lowers_recall():
    # Positive 0 at rank 0, positive 1 never retrieved: the curve stops at
    # recall 1/2, so trapezoid = (1 + 1) / 2 / 2 = 1/2 and step = 1/2.
    assert retrieval_average_precision([0, 5], [0, 1]) == pytest.approx(0.5)
    assert retrieval_average_precision([0, 5], [0, 1], method="step") == 0.5


def test_ap_perfect_and_late_positive():
    assert retrieval_average_precision([2, 3, 0, 1], [2, 3]) == 1.0
    # Positive at rank 3 after 3 negatives: (0 + 1/4) / 2 = 1/8.
    assert retrieval_average_precision([0, 1, 2, 3], [3]) == pytest.approx(1 / 8)


def test_ap_edge_cases():
    assert np.isnan(retrieval_average_precision([0, 1, 2], []))
    assert retrieval_average_precision([], [0, 1]) == 0.0
    assert retrieval_average_precision([4, 5], [0], junk=[4, 5]) == 0.0


@pytest.mark.parametrize("method", ["trapezoid", "step"])
def test_ap_matches_reference(rng, method):
    reference = reference_trapezoid_ap if method == "trapezoid" else reference_step_ap
    for _ in range(200):
        ranking, positives, junk = random_query(rng)
        expected = reference(ranking, positives, junk)
        got = retrieval_average_precision(ranking, positives, junk, method=method)
        assert got == pytest.approx(expected, abs=1e-12)


def test_ap_accepts_integral_floats():
    # Ground truth loaded from MATLAB files can arrive as float arrays.
    got = retrieval_average_precision(np.array([7.0, 0.0, 5.0, 1.0]), [0.0, 1.0], [7])
    assert got == pytest.approx(19 / 24)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ranking": [0, 1, 0], "positives": [0]}, r"ranking must list each .* 0"),
        ({"ranking": [0, -2], "positives": [0]}, r"ranking must contain .*-2"),
        ({"ranking": [0.5, 1], "positives": [0]}, r"ranking must contain integer"),
        ({"ranking": [[0, 1]], "positives": [0]}, r"ranking must be a 1-D .*\(1, 2\)"),
        ({"ranking": [0, 1], "positives": [True, False]}, r"np.flatnonzero"),
        ({"ranking": [0, 1], "positives": [1, 1]}, r"positives must list .* 1"),
        ({"ranking": [0, 1], "positives": [1], "junk": [1]}, r"\[1\] .*both"),
        (
            {"ranking": [0, 9], "positives": [1], "n_database": 5},
            r"ranking contains index 9, .*n_database=5",
        ),
    ],
)
def test_ap_rejects_invalid_indices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        retrieval_average_precision(**kwargs)


def test_ap_rejects_unknown_method():
    with pytest.raises(ValueError, match=r"'method' parameter .* Got 'area'"):
        retrieval_average_precision([0], [0], method="area")


# ---------------------------------------------------------------------------
# Mean average precision and recall@k
# ---------------------------------------------------------------------------


def test_map_hand_worked():
    # Query 0: positive at rank 0, AP 1.
    # Query 1: positives 1 and 0 at ranks 1 and 2:
    #   ((0 + 1/2) / 2 + (1/2 + 2/3) / 2) / 2 = (1/4 + 7/12) / 2 = 5/12.
    # mAP = (1 + 5/12) / 2 = 17/24.
    rankings = np.array([[0, 1, 2], [2, 1, 0]])
    positives = [[0], [0, 1]]
    assert mean_average_precision(rankings, positives) == pytest.approx(17 / 24)


def test_map_ragged_rankings_and_junk():
    # Query 0: [junk, pos, neg, pos] gives 19/24. Query 1: [pos] gives 1.
    rankings = [[7, 0, 5, 1], [3]]
    got = mean_average_precision(rankings, [[0, 1], [3]], junk=[[7], []])
    assert got == pytest.approx((19 / 24 + 1) / 2)


def test_map_excludes_queries_without_positives():
    rankings = [[0, 1], [1, 0], [0, 1]]
    with pytest.warns(UndefinedMetricWarning, match="1 of 3 queries"):
        got = mean_average_precision(rankings, [[0], [], [1]])
    # (1 + (0 + 1/2) / 2) / 2 = 5/8, the empty query left out.
    assert got == pytest.approx(5 / 8)


def test_map_all_queries_without_positives_is_nan():
    with pytest.warns(UndefinedMetricWarning, match="2 of 2 queries"):
        assert np.isnan(mean_average_precision([[0], [1]], [[], []]))


def test_map_matches_per_query_mean(rng):
    queries = [random_query(rng) for _ in range(20)]
    rankings, positives, junk = (list(parts) for parts in zip(*queries, strict=True))
    expected = np.mean(
        [reference_trapezoid_ap(*query) for query in queries]  # all have positives
    )
    got = mean_average_precision(rankings, positives, junk)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: mean_average_precision([[0, 1]], [[0], [1]]), r"expected 1 .* got 2"),
        (lambda: mean_average_precision([[0]], [[0]], [[], []]), r"junk must hold"),
        (lambda: mean_average_precision(np.arange(3), [[0]]), r"2-D .* shape \(3,\)"),
        (lambda: mean_average_precision([], []), r"rankings is empty"),
        (lambda: mean_average_precision([[0, 0]], [[0]]), r"rankings\[0\] must list"),
        (lambda: mean_average_precision([[0]], [[0, 0]]), r"positives\[0\] must"),
        (lambda: mean_average_precision([[0]], [[0]], [[0]]), r"query 0: .*both"),
    ],
)
def test_map_rejects_invalid_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_recall_at_k_hand_worked():
    # Query 0: junk 3 removed, so [0, 1]: positive 1 at rank 1.
    # Query 1: positive 0 at rank 2.
    # k=1: no hit. k=2: query 0 hits. k=3: both hit.
    rankings = [[3, 0, 1], [2, 1, 0]]
    positives, junk = [[1], [0]], [[3], []]
    assert recall_at_k(rankings, positives, 1, junk=junk) == 0.0
    assert recall_at_k(rankings, positives, 2, junk=junk) == 0.5
    assert recall_at_k(rankings, positives, 3, junk=junk) == 1.0
    # Without junk removal, positive 1 of query 0 is at rank 2.
    assert recall_at_k(rankings, positives, 2) == 0.0


def test_recall_at_k_edge_cases():
    # k beyond the ranking, a positive never retrieved, an empty ranking.
    assert recall_at_k([[0, 1]], [[1]], 50) == 1.0
    assert recall_at_k([[0, 1], []], [[5], [0]], 2) == 0.0
    with pytest.warns(UndefinedMetricWarning, match="1 of 2 queries"):
        assert recall_at_k([[0, 1], [1, 0]], [[1], []], 2) == 1.0
    with pytest.raises(ValueError, match=r"'k' parameter .* Got 0"):
        recall_at_k([[0]], [[0]], 0)


# ---------------------------------------------------------------------------
# Revisited Oxford and Paris
# ---------------------------------------------------------------------------

TOY_GND = [
    {"easy": [0, 3], "hard": [5], "junk": [1], "bbx": [0, 0, 10, 10]},
    {"easy": [6], "hard": [], "junk": []},
]
TOY_RANKINGS = [[0, 1, 5, 2, 3, 4, 6, 7], [2, 6, 0, 1, 3, 4, 5, 7]]


def test_revisited_two_queries_hand_worked():
    # Query 0, ranking [0, 1, 5, 2, 3, 4, 6, 7]:
    #   Easy   (pos {0, 3}, junk {1, 5}): kept [0, 2, 3, ...], positives at
    #          ranks 0, 2: AP = (1 + (1/2 + 2/3) / 2) / 2 = 19/24.
    #          1-based ranks [1, 3]: P@1 = 1, P@5 = P@10 = 2/3 (depth 3).
    #   Medium (pos {0, 3, 5}, junk {1}): kept [0, 5, 2, 3, ...], positives at
    #          ranks 0, 1, 3: AP = (1 + 1 + (2/3 + 3/4) / 2) / 3 = 65/72.
    #          1-based [1, 2, 4]: P@1 = 1, P@5 = P@10 = 3/4 (depth 4).
    #   Hard   (pos {5}, junk {1, 0, 3}): kept [5, ...]: AP 1, P@k = 1.
    # Query 1, ranking [2, 6, 0, ...], easy [6], no hard, no junk:
    #   Easy = Medium: positive at rank 1: AP = (0 + 1/2) / 2 = 1/4.
    #          1-based [2]: P@1 = 0, P@5 = P@10 = 1/2 (depth 2, not 5).
    #   Hard: no positives, excluded.
    result = revisited_map(TOY_RANKINGS, TOY_GND)

    easy, medium, hard = result["easy"], result["medium"], result["hard"]
    assert easy["map"] == pytest.approx((19 / 24 + 1 / 4) / 2)
    assert easy["mp_at_k"] == pytest.approx({1: 0.5, 5: 7 / 12, 10: 7 / 12})
    np.testing.assert_allclose(easy["ap"], [19 / 24, 1 / 4])
    np.testing.assert_allclose(easy["p_at_k"], [[1, 2 / 3, 2 / 3], [0, 0.5, 0.5]])
    assert easy["n_excluded"] == 0

    assert medium["map"] == pytest.approx((65 / 72 + 1 / 4) / 2)
    assert medium["mp_at_k"] == pytest.approx({1: 0.5, 5: 5 / 8, 10: 5 / 8})

    assert hard["map"] == 1.0
    assert hard["mp_at_k"] == {1: 1.0, 5: 1.0, 10: 1.0}
    assert np.isnan(hard["ap"][1])
    assert np.all(np.isnan(hard["p_at_k"][1]))
    assert hard["n_excluded"] == 1


def test_revisited_matches_reference(rng):
    n_database, ks = 25, (1, 3, 5, 10)
    gnd, rankings = [], []
    for _ in range(12):
        images = rng.permutation(n_database)
        n_easy, n_hard, n_junk = rng.integers(0, 5, size=3)
        gnd.append(
            {
                "easy": images[:n_easy],
                "hard": images[n_easy : n_easy + n_hard],
                "junk": images[n_easy + n_hard : n_easy + n_hard + n_junk],
            }
        )
        rankings.append(rng.permutation(n_database)[: rng.integers(5, n_database)])

    result = revisited_map(rankings, gnd, ks, n_database=n_database)

    for setting, positive_keys, junk_keys in [
        ("easy", ["easy"], ["junk", "hard"]),
        ("medium", ["easy", "hard"], ["junk"]),
        ("hard", ["hard"], ["junk", "easy"]),
    ]:
        aps, precisions = [], []
        for ranking, entry in zip(rankings, gnd, strict=True):
            positives = [i for key in positive_keys for i in entry[key]]
            junk = [i for key in junk_keys for i in entry[key]]
            if not positives:
                continue
            aps.append(reference_trapezoid_ap(ranking, positives, junk))
            precisions.append(
                [reference_official_precision(ranking, positives, junk, k) for k in ks]
            )
        assert result[setting]["map"] == pytest.approx(np.mean(aps), abs=1e-12)
        expected = dict(zip(ks, np.mean(precisions, axis=0), strict=True))
        assert result[setting]["mp_at_k"] == pytest.approx(expected, abs=1e-12)
        assert result[setting]["n_excluded"] == len(gnd) - len(aps)


def test_revisited_accepts_official_ranks_transposed():
    # The official code stores ranks as (n_database, n_queries).
    official_ranks = np.array(TOY_RANKINGS).T
    result = revisited_map(official_ranks.T, TOY_GND)
    assert result["easy"]["map"] == pytest.approx((19 / 24 + 1 / 4) / 2)


def test_revisited_setting_without_any_positive_is_nan():
    result = revisited_map([[0, 1]], [{"easy": [0], "hard": [], "junk": []}])
    assert np.isnan(result["hard"]["map"])
    assert np.isnan(result["hard"]["mp_at_k"][5])
    assert result["hard"]["n_excluded"] == 1


@pytest.mark.parametrize(
    ("gnd", "ks", "match"),
    [
        ([{"easy": [0], "junk": []}], (1,), r"gnd\[0\] is missing the keys \['hard'\]"),
        ([[0, 1]], (1,), r"gnd\[0\] must be a dict .* got list"),
        ([{"easy": [0], "hard": [0], "junk": []}], (1,), r"'easy' and 'hard'"),
        ([{"easy": [0], "hard": [1], "junk": [1]}], (1,), r"'hard' and 'junk'"),
        ([{"easy": [0, 0], "hard": [], "junk": []}], (1,), r"'easy'\] must list"),
        ([{"easy": [0], "hard": [], "junk": []}], (0, 5), r"ks must be .* >= 1"),
        ([{"easy": [0], "hard": [], "junk": []}], (1.5,), r"ks must be"),
        ([], (1,), r"expected 1 .* got 0"),
    ],
)
def test_revisited_rejects_invalid_gnd(gnd, ks, match):
    with pytest.raises(ValueError, match=match):
        revisited_map([[0, 1, 2]], gnd, ks)


# ---------------------------------------------------------------------------
# UKBench
# ---------------------------------------------------------------------------

UKBENCH_GROUPS = [0, 0, 0, 0, 1, 1, 1, 1]


def test_ukbench_hand_worked():
    # Query 0 (group 0): top 4 [0, 4, 1, 5] contains 0 and 1: 2.
    # Query 5 (group 1): top 4 [5, 6, 7, 4] contains all four: 4.
    # Queries 1-4 and 6-7 rank their own group's four images first: 4 each.
    # Mean = (2 + 4 * 7) / 8 = 3.75.
    rankings = [[0, 1, 2, 3, 4, 5, 6, 7]] * 4 + [[4, 5, 6, 7, 0, 1, 2, 3]] * 4
    rankings[0] = [0, 4, 1, 5, 2, 3, 6, 7]
    rankings[5] = [5, 6, 7, 4, 0, 1, 2, 3]
    assert ukbench_score(rankings, UKBENCH_GROUPS) == 3.75


def test_ukbench_reads_only_the_top_four():
    # Query 2: top 4 [4, 5, 2, 6] contains only itself: 1.
    # Query 6: ranking [6, 1] is short, two places missing: 1.
    # Only the top 4 places are checked, so the repeated 0 after them is allowed.
    rankings = [[4, 5, 2, 6, 0, 0], [6, 1]]
    got = ukbench_score(rankings, UKBENCH_GROUPS, query_indices=[2, 6])
    assert got == 1.0


@pytest.mark.parametrize(
    ("rankings", "groups", "query_indices", "match"),
    [
        ([[0, 1, 2, 3]], UKBENCH_GROUPS, None, r"one ranking per database .* got 1"),
        ([[0, 1, 2, 3]], UKBENCH_GROUPS, [0, 1], r"expected 1, got 2"),
        ([[0, 1, 2]], [0, 0, 0, 1], [0], r"group 0 of query 0 has 3"),
        ([[0, 0, 1, 2]], UKBENCH_GROUPS, [0], r"rankings\[0\] must list"),
        ([[0, 9, 1, 2]], UKBENCH_GROUPS, [0], r"index 9, .*n_database=8"),
    ],
)
def test_ukbench_rejects_invalid_inputs(rankings, groups, query_indices, match):
    with pytest.raises(ValueError, match=match):
        ukbench_score(rankings, groups, query_indices=query_indices)


# ---------------------------------------------------------------------------
# Rankings from similarities
# ---------------------------------------------------------------------------


def test_rank_by_similarity_hand_worked():
    similarities = [[0.2, 0.9, 0.2, 0.5], [1.0, 0.0, 1.0, 1.0]]
    # Ties keep the lower index first.
    np.testing.assert_array_equal(
        rank_by_similarity(similarities), [[1, 3, 0, 2], [0, 2, 3, 1]]
    )
    # exclude_self drops index 0 from row 0 and index 1 from row 1.
    np.testing.assert_array_equal(
        rank_by_similarity(similarities, exclude_self=True), [[1, 3, 2], [0, 2, 3]]
    )


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.uint8])
def test_rank_by_similarity_matches_sorted_reference(rng, dtype):
    similarities = rng.integers(0, 5, size=(6, 15)).astype(dtype)
    got = rank_by_similarity(similarities)
    for row, ranking in zip(similarities, got, strict=True):
        expected = sorted(range(row.size), key=lambda j: (-float(row[j]), j))
        np.testing.assert_array_equal(ranking, expected)


def test_rank_by_similarity_feeds_map():
    # Query 0 is database image 0, its positive is image 2.
    similarities = [[1.0, 0.3, 0.8, 0.1]]
    rankings = rank_by_similarity(similarities, exclude_self=True)
    np.testing.assert_array_equal(rankings, [[2, 1, 3]])
    assert mean_average_precision(rankings, [[2]]) == 1.0


def test_rank_by_similarity_rejects_invalid_inputs():
    with pytest.raises(ValueError, match="similarities contains NaN"):
        rank_by_similarity([[0.1, np.nan]])
    with pytest.raises(ValueError, match=r"n_queries <= n_database, .*\(3, 2\)"):
        rank_by_similarity(np.zeros((3, 2)), exclude_self=True)


# ---------------------------------------------------------------------------
# PASCAL VOC 2007 11-point AP
# ---------------------------------------------------------------------------


def test_voc07_ap_hand_worked():
    # Sorted labels [+, -, +, -]: precision 1, 1/2, 2/3, 1/2 at recall
    # 1/2, 1/2, 1, 1. t = 0 .. 0.5 (6 points) reach precision 1, t = 0.6 .. 1
    # (5 points) only ranks 3-4, max 2/3. AP = (6 + 5 * 2/3) / 11 = 28/33.
    got = voc07_average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1])
    assert got == pytest.approx(28 / 33)
    # The same with -1 for negatives.
    assert voc07_average_precision([1, -1, 1, -1], [4, 3, 2, 1]) == pytest.approx(
        28 / 33
    )


def test_voc07_ap_ignores_difficult():
    # The difficult negative at score 0.8 is dropped: [+, +, -] gives AP 1.
    got = voc07_average_precision(
        [1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], difficult=[False, True, False, False]
    )
    assert got == 1.0


def test_voc07_ap_threshold_compared_exactly():
    # 10 positives: 3 positives, 7 negatives, 7 positives. Recall reaches
    # exactly 3/10 at rank 3 with precision 1. t = 0, 0.1, 0.2, 0.3 get 1, and
    # t = 0.4 .. 1 get the best later precision, 10/17 at rank 17.
    # AP = (4 + 7 * 10/17) / 11 = 138/187. A threshold built as 3 * 0.1 > 0.3
    # would miss rank 3 and give (3 + 8 * 10/17) / 11.
    labels = [1] * 3 + [0] * 7 + [1] * 7
    scores = -np.arange(17.0)
    assert voc07_average_precision(labels, scores) == pytest.approx(138 / 187)


def test_voc07_ap_ties_keep_sample_order():
    # Equal scores: the devkit's stable sort keeps sample order [-, +].
    # Precision 1/2 at recall 1, so every threshold gets 1/2.
    assert voc07_average_precision([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert voc07_average_precision([1, 0], [0.5, 0.5]) == pytest.approx(1.0)


def test_voc07_ap_matches_reference(rng):
    for _ in range(100):
        n_samples = rng.integers(2, 40)
        labels = rng.choice([1, -1], size=n_samples)
        labels[0] = 1
        scores = rng.integers(0, 6, size=n_samples).astype(float)  # many ties
        difficult = rng.random(n_samples) < 0.2
        difficult[0] = False
        expected = reference_voc07_ap(labels, scores, difficult)
        got = voc07_average_precision(labels, scores, difficult=difficult)
        assert got == pytest.approx(expected, abs=1e-12)


def test_voc07_ap_without_positives_is_nan():
    with pytest.warns(UndefinedMetricWarning, match="No evaluated sample"):
        assert np.isnan(voc07_average_precision([0, 0], [0.1, 0.2]))
    with pytest.warns(UndefinedMetricWarning):
        got = voc07_average_precision([1, 0], [0.1, 0.2], difficult=[True, False])
    assert np.isnan(got)


def test_voc07_map_hand_worked_and_exclusion():
    # Class 0 is the 28/33 case. Class 1: its positive is third of four, so
    # the max precision at every threshold is 1/3. Class 2 has no positive.
    y_true = [[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]
    y_score = [[0.9, 0.1, 0], [0.8, 0.2, 0], [0.7, 0.3, 0], [0.1, 0.4, 0]]
    with pytest.warns(UndefinedMetricWarning, match="1 of 3 classes"):
        got = voc07_mean_average_precision(y_true, y_score)
    assert got == pytest.approx((28 / 33 + 1 / 3) / 2)


def test_voc07_map_difficult_per_class():
    # Marking sample 1 difficult for class 0 only turns class 0's AP into 1.
    y_true = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])
    y_score = np.array([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3], [0.1, 0.4]])
    difficult = np.zeros((4, 2), dtype=bool)
    difficult[1, 0] = True
    got = voc07_mean_average_precision(y_true, y_score, difficult=difficult)
    assert got == pytest.approx((1 + 1 / 3) / 2)


@pytest.mark.parametrize(
    ("y_true", "y_score", "difficult", "match"),
    [
        ([1, 0, -1], [1, 2, 3], None, r"both 0 and -1.*difficult=labels == 0"),
        ([1, 2, 0], [1, 2, 3], None, r"y_true must hold 1 .* \[0, 1, 2\]"),
        ([1, 0.5, 0], [1, 2, 3], None, r"y_true must hold 1 .* \[0.0, 0.5, 1.0\]"),
        (["a", "b"], [1, 2], None, r"y_true must hold 1 .* \['a', 'b'\]"),
        ([1, 0, 0], [1, 2], None, r"shape of y_true \(3,\), got \(2,\)"),
        ([[1, 0]], [[1, 2]], None, r"y_true must be 1-D, got shape \(1, 2\)"),
        ([1, 0], [1, 2], [1, 0], r"difficult must be a boolean .* int"),
        ([1, 0], [1, 2], [True], r"difficult must be a boolean .* shape \(1,\)"),
        ([1, 0], [1, np.inf], None, r"y_score contains infinity"),
    ],
)
def test_voc07_ap_rejects_invalid_inputs(y_true, y_score, difficult, match):
    with pytest.raises(ValueError, match=match):
        voc07_average_precision(y_true, y_score, difficult=difficult)


def test_voc07_map_rejects_one_dimensional_labels():
    with pytest.raises(ValueError, match=r"y_true must be 2-D, got shape \(2,\)"):
        voc07_mean_average_precision([1, 0], [0.3, 0.1])


# ---------------------------------------------------------------------------
# Scorers
# ---------------------------------------------------------------------------


def test_voc07_scorer_in_grid_search():
    X, Y = make_multilabel_classification(
        n_samples=60, n_features=8, n_classes=3, random_state=0
    )
    cv = KFold(n_splits=3, shuffle=True, random_state=0)
    search = GridSearchCV(
        OneVsRestClassifier(LinearSVC()),
        {"estimator__C": [0.01, 1.0]},
        scoring=voc07_map_scorer,
        cv=cv,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        search.fit(X, Y)

    # Recompute the best candidate's folds by hand from decision_function.
    fold_scores = []
    for train, test in cv.split(X):
        model = OneVsRestClassifier(LinearSVC(C=search.best_params_["estimator__C"]))
        model.fit(X[train], Y[train])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            fold_scores.append(
                voc07_mean_average_precision(Y[test], model.decision_function(X[test]))
            )
    assert search.best_score_ == pytest.approx(np.mean(fold_scores))
    assert 0.5 < search.best_score_ <= 1.0


def test_voc07_scorer_equals_metric_on_decision_function():
    X, Y = make_multilabel_classification(n_samples=40, n_classes=2, random_state=1)
    model = OneVsRestClassifier(LinearSVC()).fit(X, Y)
    expected = voc07_mean_average_precision(Y, model.decision_function(X))
    assert voc07_map_scorer(model, X, Y) == pytest.approx(expected)


def test_retrieval_scorer_hand_worked():
    # Samples 0 and 1 have label 0, samples 2 and 3 label 1. Once each sample
    # is dropped from its own ranking, inner products rank its partner first,
    # except for sample 1: its scores are [0.9, -, 0.95, 0.5], partner second.
    X = np.array([[1.0, 0.0], [0.9, 0.5], [0.5, 1.0], [0.0, 1.0]])
    labels = [0, 0, 1, 1]
    identity = FunctionTransformer().fit(X)
    similarities = X @ X.T
    rankings = rank_by_similarity(similarities, exclude_self=True)
    np.testing.assert_array_equal(rankings[1], [2, 0, 3])

    # Sample 1's AP is (0 + 1/2) / 2 = 1/4, the others 1: mAP = 13/16.
    assert make_retrieval_scorer("map")(identity, X, labels) == pytest.approx(13 / 16)
    assert make_retrieval_scorer("recall_at_k", k=1)(identity, X, labels) == 0.75
    assert make_retrieval_scorer("recall_at_k", k=2)(identity, X, labels) == 1.0


def test_retrieval_scorer_ukbench_and_custom_similarity():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    X = np.repeat(np.eye(2), 4, axis=0)
    scorer = make_retrieval_scorer("ukbench")
    assert scorer(FunctionTransformer().fit(X), X, labels) == 4.0

    # A similarity that ranks by index puts images 0-3 first for every query.
    def by_index(estimator, X):
        return np.tile(-np.arange(len(X), dtype=float), (len(X), 1))

    scorer = make_retrieval_scorer("ukbench", similarity=by_index)
    assert scorer(None, X, labels) == 2.0  # 4 for group 0, 0 for group 1


def test_retrieval_scorer_int8_and_sparse_codes(rng):
    # Inner products of 300-dim +-1 codes reach 300, beyond int8. The scorer
    # must match the float computation for int8 and sparse codes alike.
    labels = np.repeat(np.arange(4), 3)
    signs = np.where(rng.random((4, 300)) < 0.5, -1, 1)
    flips = np.where(rng.random((12, 300)) < 0.2, -1, 1)
    codes = (signs[labels] * flips).astype(np.int8)
    scorer = make_retrieval_scorer("map")

    expected = scorer(FunctionTransformer().fit(codes), codes.astype(float), labels)
    int8_codes = FunctionTransformer(lambda X: X.astype(np.int8)).fit(codes)
    sparse_codes = FunctionTransformer(scipy.sparse.csr_matrix).fit(codes)
    assert expected == 1.0
    assert scorer(int8_codes, codes, labels) == expected
    assert scorer(sparse_codes, codes, labels) == expected


def test_retrieval_scorer_ukbench_with_group_folds():
    # Four groups of 4 identical one-hot codes: every fold of whole groups
    # scores a perfect 4.
    labels = np.repeat(np.arange(4), 4)
    X = np.eye(4)[labels]
    scores = cross_val_score(
        FunctionTransformer(),
        X,
        labels,
        groups=labels,
        cv=GroupKFold(n_splits=2),
        scoring=make_retrieval_scorer("ukbench"),
    )
    np.testing.assert_array_equal(scores, [4.0, 4.0])


def test_retrieval_scorer_in_grid_search(rng):
    # Six classes sit on a circle of radius 10 in dims 0-1, with unit noise in
    # dims 2-5. PCA keeps the circle with 2 components. With 1 component,
    # classes at mirrored angles project onto the same point and get confused.
    labels = np.repeat(np.arange(6), 6)
    angles = 2 * np.pi * labels / 6 + 0.3
    circle = 10 * np.column_stack([np.cos(angles), np.sin(angles)])
    X = np.hstack([circle + 0.3 * rng.normal(size=(36, 2)), rng.normal(size=(36, 4))])
    search = GridSearchCV(
        PCA(),
        {"n_components": [1, 2]},
        scoring=make_retrieval_scorer("map"),
        cv=StratifiedKFold(n_splits=2, shuffle=True, random_state=0),
    )
    search.fit(X, labels)
    assert search.best_params_ == {"n_components": 2}
    assert search.best_score_ > 0.95
    assert search.cv_results_["mean_test_score"][0] < 0.8


def test_retrieval_scorer_rejects_invalid_inputs():
    X = np.eye(3)
    identity = FunctionTransformer().fit(X)
    with pytest.raises(ValueError, match="needs y"):
        make_retrieval_scorer()(identity, X, None)
    with pytest.raises(ValueError, match=r"\(3, 3\) similarity .* got shape \(3, 2\)"):
        make_retrieval_scorer(similarity=lambda e, X: np.zeros((3, 2)))(
            identity, X, [0, 0, 1]
        )
    with pytest.raises(ValueError, match=r"'metric' parameter .* Got 'ndcg'"):
        make_retrieval_scorer("ndcg")
