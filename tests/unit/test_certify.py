"""The certification solver against what must hold: its intervals match a 100,000-point
grid of the transformed embeddings' scores wherever the grid can tell, a hand-worked 3-D
case, phi = 0 keeps the prediction, an in-class edit keeps [0, 1], logit scales and
SigLIP's sigmoid change nothing, budgets only shorten, degenerate geometry stays finite."""
import math

import numpy as np
import pytest

from lgip.probes import certify as cert
from lgip.probes import certify_summary as summary

GRID_POINTS = 100_001
GRID_CHUNK = 10_000
TOL = 1e-9          # a grid point whose top scores (or budget margin) are within TOL is a tie the grid cannot resolve
BUDGETS = (0.0, 0.03)


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_problem(seed, dim, n_classes, n_images, n_edits):
    """Images near a class; edits alternately toward random directions (large turns, many
    flips and near-ties) and near the class prompt (small turns)."""
    rng = np.random.default_rng(seed)
    classes = unit(rng.normal(size=(n_classes, dim)))
    images = unit(classes[rng.integers(0, n_classes, n_images)] + 0.8 * unit(rng.normal(size=(n_images, dim))))
    near = unit(classes[None] + 0.7 * unit(rng.normal(size=(n_edits, n_classes, dim))))
    far = unit(rng.normal(size=(n_edits, n_classes, dim)))
    targets = np.where((np.arange(n_edits) % 2 == 0)[:, None, None], far, near)
    return images, classes, targets


def path_scores(z, a, a2, classes, transform, phis):
    """Scores of every class along the path, written here from the definitions (not from
    the solver's coefficients): each transformed embedding is a combination of a few fixed
    vectors, so its scores are the same combination of their scores."""
    phis = phis[:, None]
    if transform == "rotate":
        e1 = a
        e2 = a2 - (a2 @ a) * a
        theta = math.atan2(np.linalg.norm(e2), a2 @ a)
        e2 = e2 / np.linalg.norm(e2)
        x, y = z @ e1, z @ e2
        rest = z - x * e1 - y * e2
        t = phis * theta
        return rest @ classes.T + (x * np.cos(t) - y * np.sin(t)) * (e1 @ classes.T) + \
            (x * np.sin(t) + y * np.cos(t)) * (e2 @ classes.T)
    if transform == "slerp":
        omega = math.acos(np.clip(z @ a2, -1, 1))
        return (np.sin((1 - phis) * omega) * (z @ classes.T) + np.sin(phis * omega) * (a2 @ classes.T)) / math.sin(omega)
    mixed = (1 - phis) * (z @ classes.T) + phis * (a2 @ classes.T)
    norm = np.sqrt((1 - phis) ** 2 + phis ** 2 + 2 * phis * (1 - phis) * (z @ a2))
    return mixed / norm


def class_on_grid(intervals, phis):
    starts = np.array([start for start, _, _ in intervals])
    classes = np.array([-1 if c is None else c for _, _, c in intervals])
    return classes[np.searchsorted(starts, phis, side="right") - 1]


def check_covering(intervals):
    assert intervals[0][0] == 0.0 and intervals[-1][1] == 1.0
    for (s1, e1, c1), (s2, e2, c2) in zip(intervals, intervals[1:]):
        assert e1 == s2 and s1 < e1 and c1 != c2


def class_distances(classes):
    distance = np.sqrt(np.maximum(2 - 2 * classes @ classes.T, 0))
    np.fill_diagonal(distance, 0)
    return distance


def check_against_grid(intervals, scores, distance, budget, phis):
    """At every grid point: the solver's class leads (within TOL) and wins by the budget
    margins (within TOL); where the solver says uncertified, no class wins by more than TOL."""
    solved = class_on_grid(intervals, phis)
    rows = np.arange(len(phis))
    certified = solved >= 0
    k = np.where(certified, solved, scores.argmax(axis=1))
    leads = scores[rows, k] >= scores.max(axis=1) - TOL
    if budget == 0:
        bad = ~(certified & leads)
    else:
        margins = scores[rows, k][:, None] - scores - budget * distance[k]
        margins[rows, k] = np.inf
        worst = margins.min(axis=1)
        bad = certified & ~(leads & (worst >= -TOL)) | ~certified & (worst > TOL)
    assert not bad.any(), f"solver disagrees with the grid at phi = {phis[bad][:5]} ({intervals})"


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_intervals_equal_the_grid(transform):
    phis = np.linspace(0.0, 1.0, GRID_POINTS)
    cases = [(seed, 8, 6, 8, 2) for seed in range(3)] + [(3, 128, 60, 3, 2), (4, 1024, 1000, 1, 1)]
    boundaries = uncertified = 0
    for seed, dim, n_classes, n_images, n_edits in cases:
        images, classes, targets = random_problem(seed, dim, n_classes, n_images, n_edits)
        results = cert.certify(images, classes, targets, transform=transform, budgets=BUDGETS)
        predicted = (images @ classes.T).argmax(axis=1)
        assert np.array_equal(results[0].predicted, predicted)
        distance = class_distances(classes)
        for i in range(n_images):
            for e in range(n_edits):
                source, target = classes[predicted[i]], targets[e, predicted[i]]
                for lo in range(0, GRID_POINTS, GRID_CHUNK):
                    part = phis[lo:lo + GRID_CHUNK]
                    scores = path_scores(images[i], source, target, classes, transform, part)
                    for result in results:
                        check_against_grid(result.intervals(i, e), scores, distance, result.budget, part)
                for result in results:
                    intervals = result.intervals(i, e)
                    check_covering(intervals)
                    boundaries += len(intervals) - 1
                    uncertified += sum(c is None for _, _, c in intervals)
    # The cases must exercise flips and budgets, or the comparison above proves little.
    assert boundaries > 20 and uncertified > 5


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_path_scores_are_the_transformed_embeddings(transform):
    images, classes, targets = random_problem(7, 32, 10, 5, 1)
    predicted = (images @ classes.T).argmax(axis=1)
    phi = np.random.default_rng(0).uniform(size=5)
    moved = cert.transform_embeddings(images, classes[predicted], targets[0, predicted], phi, transform)
    assert np.allclose(np.linalg.norm(moved, axis=1), 1)
    for i in range(5):
        expected = path_scores(images[i], classes[predicted[i]], targets[0, predicted[i]], classes, transform, phi[i:i + 1])
        assert np.allclose(moved[i] @ classes.T, expected[0], atol=1e-12)


def test_rotation_is_a_rotation_of_the_plane():
    """rotate equals the D x D rotation that turns span(a, a') by phi*theta and fixes its
    complement; at phi = 1 it carries a onto a'."""
    rng = np.random.default_rng(1)
    dim = 7
    a, a2, z = unit(rng.normal(size=(3, dim)))
    basis, _ = np.linalg.qr(np.column_stack([a, a2, rng.normal(size=(dim, dim - 2))]))
    basis[:, 0] *= np.sign(basis[:, 0] @ a)
    basis[:, 1] *= np.sign(basis[:, 1] @ a2)
    theta = math.acos(a @ a2)
    for phi in (0.0, 0.3, 1.0):
        t = phi * theta
        turn = np.eye(dim)
        turn[:2, :2] = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
        rotation = basis @ turn @ basis.T
        got = cert.transform_embeddings(z[None], a[None], a2[None], phi, "rotate")[0]
        assert np.allclose(got, rotation @ z, atol=1e-12)
    assert np.allclose(cert.transform_embeddings(a[None], a[None], a2[None], 1.0, "rotate")[0], a2, atol=1e-12)


def test_hand_worked_3d_case():
    """Classes e_x, e_y, e_z; the edit of class 0 turns e_x onto e_y (theta = 90 degrees).

    rotate: z = (cos b cos h, sin b cos h, sin h) with b = 10, h = 30 degrees predicts class 0
    (0.853 against 0.150 and 0.5). Its in-plane part has length cos h at angle b and turns to
    angle psi = b + phi*90 degrees, the e_z part stays, so s0 = cos h cos psi, s1 = cos h sin psi,
    s2 = sin h. Classes 0 and 1 tie at psi = 45 degrees: phi = (45 - 10)/90 = 7/18 (there
    s0 = s1 = 0.612 > s2 = 0.5). With budget eps: s0 - s1 = sqrt(2) cos h cos(psi + 45) must
    exceed eps |e_x - e_y| = sqrt(2) eps, so class 0 holds until psi = acos(eps/cos h) - 45;
    class 1 needs sin(psi - 45) >= eps/cos h, from psi = 45 + asin(eps/cos h). For eps = 0.1
    class 2 never interferes (margins >= 0.179 > 0.1 sqrt(2)).

    slerp and lerp with z = (cos b, sin b, 0) in the plane: slerp turns z at the rate
    omega = 80 degrees, reaching 45 degrees at phi = 35/80 = 7/16; lerp's (1 - phi) z + phi e_y
    has equal x and y at phi = (cos b - sin b)/(1 + cos b - sin b)."""
    classes = np.eye(3)
    targets = np.array([[[0.0, 1, 0], [0, 1, 0], [0, 0, 1]]])
    b, h, eps = math.radians(10), math.radians(30), 0.1
    tilted = np.array([[math.cos(b) * math.cos(h), math.sin(b) * math.cos(h), math.sin(h)]])
    flat = np.array([[math.cos(b), math.sin(b), 0.0]])

    plain, budgeted = cert.certify(tilted, classes, targets, transform="rotate", budgets=(0.0, eps))
    expected = [(0.0, 7 / 18, 0), (7 / 18, 1.0, 1)]
    assert _close(plain.intervals(0, 0), expected)
    lose = (math.acos(eps / math.cos(h)) - math.pi / 4 - b) / (math.pi / 2)
    gain = (math.pi / 4 + math.asin(eps / math.cos(h)) - b) / (math.pi / 2)
    assert _close(budgeted.intervals(0, 0), [(0.0, lose, 0), (lose, gain, None), (gain, 1.0, 1)])
    assert math.isclose(budgeted.extent[0, 0], lose) and budgeted.next_class[0, 0] == cert.UNCERTIFIED
    assert budgeted.flip_class[0, 0] == 1 and plain.next_class[0, 0] == 1

    slerp, = cert.certify(flat, classes, targets, transform="slerp")
    assert _close(slerp.intervals(0, 0), [(0.0, 7 / 16, 0), (7 / 16, 1.0, 1)])
    tie = (math.cos(b) - math.sin(b)) / (1 + math.cos(b) - math.sin(b))
    lerp, = cert.certify(flat, classes, targets, transform="lerp")
    assert _close(lerp.intervals(0, 0), [(0.0, tie, 0), (tie, 1.0, 1)])


def _close(got, expected):
    return len(got) == len(expected) and all(
        math.isclose(s, s2, abs_tol=1e-12) and math.isclose(e, e2, abs_tol=1e-12) and c == c2
        for (s, e, c), (s2, e2, c2) in zip(got, expected))


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_phi_zero_keeps_the_prediction(transform):
    images, classes, targets = random_problem(11, 48, 30, 200, 4)
    plain, = cert.certify(images, classes, targets, transform=transform)
    predicted = (images @ classes.T).argmax(axis=1)
    first = np.array([[plain.intervals(i, e)[0][2] for e in range(4)] for i in range(200)])
    assert (first == predicted[:, None]).all()
    assert (plain.extent > 0).all()


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_an_edit_within_the_class_keeps_all_of_it(transform):
    """Classes are the first five axes; images sit near one of them; each edit tilts the
    class prompt toward an axis no class uses, so the class keeps winning all the way."""
    rng = np.random.default_rng(5)
    dim = 16
    classes = np.eye(dim)[:5]
    labels = rng.integers(0, 5, 50)
    images = unit(classes[labels] + 0.1 * rng.normal(size=(50, dim)))
    targets = unit(classes[None] + 0.6 * np.eye(dim)[[10, 12]][:, None, :])
    for result in cert.certify(images, classes, targets, transform=transform, budgets=(0.0, 0.05)):
        assert (result.predicted == labels).all()
        for i in range(50):
            for e in range(2):
                assert result.intervals(i, e) == [(0.0, 1.0, int(labels[i]))]
        assert (result.extent == 1).all() and (result.next_class == cert.NO_BOUNDARY).all()
        assert (result.flip_class == cert.NO_BOUNDARY).all()


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_logit_scale_and_siglip_sigmoid_change_nothing(transform):
    """The solver sees cosines; a model ranks classes by 100 x cosine (CLIP) or by
    sigmoid(10 x cosine - 10) (SigLIP's initial scale and bias). The intervals are the
    argmax of those scores on the grid too, and scaled embeddings give the same answer."""
    images, classes, targets = random_problem(21, 64, 25, 4, 2)
    plain, = cert.certify(images, classes, targets, transform=transform)
    scaled, = cert.certify(images * 3.0, classes * 100.0, targets * 7.0, transform=transform)
    assert np.allclose(plain.extent, scaled.extent, atol=1e-12)
    assert np.array_equal(plain.classes, scaled.classes) and np.array_equal(plain.n_intervals, scaled.n_intervals)
    phis = np.linspace(0, 1, GRID_POINTS)
    for i in range(4):
        for e in range(2):
            p = plain.predicted[i]
            cosines = path_scores(images[i], classes[p], targets[e, p], classes, transform, phis)
            solved = class_on_grid(plain.intervals(i, e), phis)
            resolved = np.sort(cosines, axis=1)[:, -1] - np.sort(cosines, axis=1)[:, -2] > TOL
            for model_scores in (100.0 * cosines, 1 / (1 + np.exp(-(10.0 * cosines - 10.0)))):
                assert (model_scores.argmax(axis=1) == solved)[resolved].all()


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_a_larger_budget_never_lengthens_the_extent(transform):
    images, classes, targets = random_problem(31, 64, 40, 300, 3)
    budgets = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1)
    extents = np.stack([r.extent for r in cert.certify(images, classes, targets, transform=transform, budgets=budgets)])
    assert (np.diff(extents, axis=0) <= 0).all()
    assert (extents[-1] < extents[0]).any()


@pytest.mark.parametrize("transform", cert.TRANSFORMS)
def test_degenerate_geometry_is_finite_and_sensible(transform):
    """a' = a (and a' a hair from a), z = a' for slerp/lerp, z = -a', and for rotate an
    image with no part in the plane: no NaN, and where nothing moves, one interval."""
    rng = np.random.default_rng(2)
    classes = unit(rng.normal(size=(6, 12)))
    images = unit(classes[rng.integers(0, 6, 20)] + 0.3 * rng.normal(size=(20, 12)))
    # theta = 0, below DEGENERATE_SIN, and just above it (a turn of about 1e-8).
    still = np.stack([classes, unit(classes + 1e-13 * rng.normal(size=classes.shape)),
                      unit(classes + 1e-8 * rng.normal(size=classes.shape))])
    if transform == "rotate":
        for result in cert.certify(images, classes, still, transform=transform, budgets=(0.0, 0.01)):
            assert result.budget > 0 or all(result.intervals(i, e) == [(0.0, 1.0, int(result.predicted[i]))]
                                            for i in range(20) for e in range(3))
            assert np.isfinite(result.extent).all() and np.isfinite(result.starts).all()
    # The image is its class's target (z = a'); then minus its target.
    image = images[:1]
    predicted = int((image @ classes.T).argmax())
    for sign in (1.0, -1.0):
        targets = np.repeat(classes[None], 1, axis=0).copy()
        targets[0, predicted] = sign * image[0]
        for result in cert.certify(image, classes, targets, transform=transform, budgets=(0.0, 0.01)):
            intervals = result.intervals(0, 0)
            assert all(np.isfinite([s, e]).all() for s, e, _ in intervals)
            check_covering(intervals)
            if sign > 0 and transform != "rotate" and result.budget == 0:
                assert intervals == [(0.0, 1.0, predicted)]

    # rotate with z orthogonal to the plane of its edit: scores stay as they are.
    classes = unit(np.array([[1.0, 0, 0, 0, 0, 0], [0, 1, 0, -1, 0, 0], [0, 0, 1, -0.5, 0, 0]]))
    z = np.array([[0.0, 0, 0, 1, 0, 0]])
    targets = unit(np.array([[[1.0, 0, 0, 0, 0, 1], [0, 1, 0, -1, 0, 0], [0, 0, 1, -0.5, 0, 0]]]))
    if transform == "rotate":
        for result in cert.certify(z, classes, targets, transform="rotate", budgets=(0.0, 0.1)):
            assert result.intervals(0, 0) == [(0.0, 1.0, 0)]


def test_summaries():
    extent = np.array([[1.0, 0.25], [0.55, 1.0], [0.0, 0.0], [1.0, 1.0]])
    correct = np.array([True, True, False, True])
    acc = summary.certified_accuracy(extent[:, 0], correct)
    assert acc[0.1] == 0.75 and acc[0.5] == 0.75 and acc[0.6] == 0.5 and acc[1.0] == 0.5
    pooled = summary.certified_accuracy(extent, correct, levels=(0.3, 1.0))
    assert pooled == {0.3: 5 / 8, 1.0: 4 / 8}
    assert math.isclose(summary.mean_certified_extent(extent, correct), (1 + 0.25 + 0.55 + 1 + 1 + 1) / 6)
    assert math.isclose(summary.share_fully_certified(extent, correct), 4 / 6)
    assert summary.mean_certified_extent(extent, np.zeros(4, bool)) is None
    flips = np.array([[2, cert.NO_BOUNDARY], [1, 2], [0, 0], [2, cert.NO_BOUNDARY]])
    assert summary.top_flip_classes(flips, ["a", "b", "c"], top=2) == [("c", 3), ("a", 2)]
    assert summary.top_flip_classes(flips, ["a", "b", "c"], mask=correct) == [("c", 3), ("b", 1)]
    assert summary.interval_count_distribution(np.array([[1, 2], [1, 1]])) == {1: 0.75, 2: 0.25}


def test_many_images_in_chunks_equal_one_by_one():
    images, classes, targets = random_problem(41, 32, 12, 60, 3)
    whole, = cert.certify(images, classes, targets, budgets=(0.02,))
    chunked, = cert.certify(images, classes, targets, budgets=(0.02,), chunk_elements=12 * 7)
    # Matrix products over different row counts may round differently: equal up to that.
    assert np.allclose(whole.extent, chunked.extent, atol=1e-12) and np.array_equal(whole.offsets, chunked.offsets)
    assert np.array_equal(whole.classes, chunked.classes)
    one, = cert.certify(images[17:18], classes, targets, budgets=(0.02,))
    for e in range(3):
        assert _close(one.intervals(0, e), whole.intervals(17, e))


def test_lerp_and_slerp_walk_the_same_arc():
    """Normalised straight interpolation passes the points of the great circle from z to
    a', only at another pace: the same classes in the same order under any budget, with
    lerp's boundary phi_l where slerp's is atan2(phi_l sin w, 1 - phi_l + phi_l cos w)/w."""
    images, classes, targets = random_problem(51, 40, 20, 40, 2)
    budgets = (0.0, 0.02)
    slerp = cert.certify(images, classes, targets, transform="slerp", budgets=budgets)
    lerp = cert.certify(images, classes, targets, transform="lerp", budgets=budgets)
    for by_slerp, by_lerp in zip(slerp, lerp):
        assert np.array_equal(by_slerp.classes, by_lerp.classes)
        for i in range(40):
            for e in range(2):
                target = targets[e, by_slerp.predicted[i]]
                omega = math.acos(np.clip(images[i] @ target, -1, 1))
                for (s_start, _, _), (l_start, _, _) in zip(by_slerp.intervals(i, e), by_lerp.intervals(i, e)):
                    mapped = math.atan2(l_start * math.sin(omega), 1 - l_start + l_start * math.cos(omega)) / omega
                    assert math.isclose(s_start, mapped, abs_tol=1e-9)
    assert (slerp[1].n_intervals > 1).any()
