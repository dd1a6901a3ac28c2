"""Semantic certification, solved exactly: how far an image embedding can move along a
text-defined edit before its zero-shot prediction changes. Numpy only.

Notation. z is a unit image embedding, u_c the unit class-prompt embeddings, s_c = <z, u_c>
the scores, y0 = argmax_c s_c the prediction. An edit gives, for the predicted class, a
source direction a (its class prompt, "a photo of a gyoza") and a target a' (the edited
prompt, "a photo of a triangular gyoza"). An extent phi in [0, 1] moves z to z(phi), with
z(0) = z; three readings of "move along the edit" are offered (TRANSFORMS).

rotate  The plane span(a, a') has the orthonormal basis e1 = a, e2 = w/|w| with
        w = a' - <a, a'> a, and theta = atan2(|w|, <a, a'>) in [0, pi] is the angle from a to
        a'. With x = <z, e1>, y = <z, e2> and t = phi*theta, the in-plane part x e1 + y e2 is
        turned by t (the turn that carries a onto a' at phi = 1) and the rest of z is kept:
            z(phi) = z + (x (cos t - 1) - y sin t) e1 + (x sin t + y (cos t - 1)) e2,
        a unit vector. With alpha_c = <e1, u_c>, beta_c = <e2, u_c>:
            s_c(phi) = A_c cos t + B_c sin t + C_c,
            A_c = x alpha_c + y beta_c,  B_c = x beta_c - y alpha_c,  C_c = s_c - A_c.
slerp   z itself travels the great circle toward a': with k = <z, a'>,
        v = (a' - k z)/|a' - k z| and omega = atan2(|a' - k z|, k),
            z(phi) = cos(phi omega) z + sin(phi omega) v
                   = sin((1 - phi) omega)/sin omega z + sin(phi omega)/sin omega a',
        so s_c(phi) = A_c cos t + B_c sin t with t = phi*omega, A_c = s_c and
        B_c = <v, u_c> = (<a', u_c> - k s_c)/sin omega. (a is not used.)
lerp    z(phi) = z_lin(phi)/|z_lin(phi)| with z_lin(phi) = (1 - phi) z + phi a', so
        s_c(phi) = l_c(phi)/n(phi), l_c(phi) = (1 - phi) s_c + phi <a', u_c> (linear) and
        n(phi)^2 = |z_lin|^2 = 1 - 2 g phi + 2 g phi^2 with g = 1 - k.

Budget. Class y is certified at phi under a budget eps when, for every other class c,
    m_c(phi) = s_y(phi) - s_c(phi) - eps |u_y - u_c|  >=  0.
Then every embedding within eps of z(phi) still scores y at least as high as any c (for
|z~ - z(phi)| <= eps, <z~, u_y - u_c> >= <z(phi), u_y - u_c> - eps |u_y - u_c|); eps is the
allowance for a really edited image embedding away from the text proxy z(phi). With eps = 0
"certified" is "is the argmax" (ties included). Only the argmax can be certified.

Roots, exactly. rotate and slerp keep the unit norm, so with the winner w fixed each margin
is m(t) = dA cos t + dB sin t + c0 (dA = A_w - A_c, dB = B_w - B_c, c0 = C_w - C_c - kappa,
kappa = eps |u_w - u_c|). t runs over [0, theta] (or [0, omega]), at most pi long, so
x = tan(t/2) runs monotonically over [0, tan(theta/2)], and with cos t = (1 - x^2)/(1 + x^2),
sin t = 2x/(1 + x^2):
    m(t) (1 + x^2) = P(x) = (c0 - dA) x^2 + 2 dB x + (c0 + dA),
a quadratic: at most two roots, found without inverse trigonometry per class, and only the
earliest per row is turned back into phi = 2 atan(x)/theta. For lerp the norm does not change
the argmax but does change the budget term: m >= 0 <=> L(phi) = l_w - l_c = p + q phi >=
kappa n(phi) <=> L >= 0 and Q(phi) = L^2 - kappa^2 n^2 >= 0, Q a quadratic in x = phi with
    a2 = q^2 - 2 g kappa^2,  a1 = 2 p q + 2 g kappa^2,  a0 = p^2 - kappa^2
(without a budget, L itself). A root of Q is a root of m only where L >= 0; a budget is only
applied inside an argmax interval of w, where L >= 0 throughout, so there every root of Q is
one of m and m < 0 exactly where Q < 0. Written a x^2 + 2 h x + c, every quadratic's roots
come from the cancellation-free pair -r/a, -c/r (r = h + sign(h) sqrt(h^2 - a c)); the one
where its slope is negative is the falling root (the class catches up with w; for lerp
Q' = 2 kappa n m' there), the other the rising root. Every margin thus has at most one falling
and one rising root in [0, 1].

Sweep. [0, 1] is split without sampling: starting at phi = 0 with w the argmax just after
the current point, the next boundary is the earliest falling root of m_c (kappa = 0) over
all c; the class that wins just past it (scores compared PROBE_STEP past the root, so a
three-way tie or a touching curve resolves to the class that really leads afterwards) owns
the next interval. Under a budget, each argmax interval of w is split further: while w is
certified, the next change is the earliest falling root of its budget margins; while it is
not, the earliest point where every margin that is negative has risen again is the latest
of their rising roots, where the state is checked again. Every step is array code over
all (image, class) pairs at once; the only Python loops run over edits, chunks of images and
the handful of events along [0, 1].

Leaving classes out, exactly. Each class's score along the whole path is bounded in closed
form (for lerp by slerp's bounds: normalised chord points lie on the same arc). The leader
never scores below the largest lower bound, so a class whose upper bound stays below it can
never lead, and one whose upper bound plus eps |u_w - u_c| stays below it never breaks w's
budget margin. Such classes are dropped; the sweeps run on each row's contenders only.

Budgets nest: where w is certified under eps it is certified under every smaller budget, so
the budgets are solved in increasing order, each refining only the stretches the previous
one certified.

Degenerate cases give constant scores (one interval): theta or omega below DEGENERATE_SIN
(a' = a, or z = a' for slerp; z = -a' makes slerp's path undefined and it is also kept
still) and a zero in-plane part (A = B = 0). For lerp, z = -a' makes z_lin(1/2) = 0; its
scores there are taken with a floored norm.

Results: intervals [start, end) with a class index, the last one closed at 1; an
uncertified stretch has class UNCERTIFIED. The certified extent is the end of the first
interval when that interval is certified for the prediction, otherwise 0.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

TRANSFORMS = ("rotate", "slerp", "lerp")
EXTENT_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
UNCERTIFIED = -1          # class of a stretch no class wins by the budget
NO_BOUNDARY = -2          # next_class / flip_class where nothing follows the first interval
PROBE_STEP = 1e-9         # how far past a root the new leader is read off (stretches shorter than this are not resolved)
DEGENERATE_SIN = 1e-12    # below this sin(theta) (or sin(omega)) the edit is taken as no movement
NORM_FLOOR = 1e-30        # lerp's squared norm floor (only z = -a' at phi = 1/2 reaches it)
CLOSE_SIN = 1e-2          # below this sin, slerp measures the angle from the vectors, not from their dot product
BOUND_GUARD = 1e-9        # added to the slack when leaving classes out, against rounding in the bounds
RESTRICT_BELOW = 0.5      # restrict to the contenders only when they are at most this share of classes
FEW_CLASSES = 0.125       # rows with at most this share of contenders are solved as a group of their own
CHUNK_ELEMENTS = 1 << 17  # images x classes per step: arrays of 1 MB stay in cache (faster than larger steps)


def unit_rows(vectors) -> np.ndarray:
    """The rows of `vectors` scaled to unit length, in float64 (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def _rowdot(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return np.einsum("md,md->m", left, right)


def _turn(start: np.ndarray, toward: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For unit rows p (start) and q (toward): <p, q>, the unit tangent at p toward q (the
    e2 completing e1 = p to a basis of span(p, q); zero where q = +-p) and the angle from p
    to q in [0, pi] (0 there)."""
    cos = _rowdot(start, toward)
    away = toward - cos[:, None] * start
    sin = np.linalg.norm(away, axis=1)
    moving = sin > DEGENERATE_SIN
    tangent = np.divide(away, sin[:, None], out=np.zeros_like(away), where=moving[:, None])
    return cos, tangent, np.where(moving, np.arctan2(sin, cos), 0.0)


def transform_embeddings(images, sources, targets, phi, transform: str = "rotate") -> np.ndarray:
    """z(phi) for each row: image embeddings [M, D] moved along their own edit (source and
    target rows [M, D]) by extent phi (a number or [M]), as the module docstring defines the
    three transforms. Inputs are normalised first; the result has unit rows."""
    _check_transform(transform)
    z, a, a2 = unit_rows(images), unit_rows(sources), unit_rows(targets)
    phi = np.broadcast_to(np.asarray(phi, dtype=np.float64), (z.shape[0],))[:, None]
    if transform == "rotate":
        _, e2, theta = _turn(a, a2)
        x, y = _rowdot(z, a)[:, None], _rowdot(z, e2)[:, None]
        t = phi * theta[:, None]
        return z + (x * (np.cos(t) - 1) - y * np.sin(t)) * a + (x * np.sin(t) + y * (np.cos(t) - 1)) * e2
    if transform == "slerp":
        _, tangent, omega = _turn(z, a2)
        t = phi * omega[:, None]
        return np.cos(t) * z + np.sin(t) * tangent
    return unit_rows((1 - phi) * z + phi * a2)


def _check_transform(transform: str) -> None:
    if transform not in TRANSFORMS:
        raise ValueError(f"unknown transform {transform!r}; expected one of {', '.join(TRANSFORMS)}")


def _crossings(a, h, c, rising=True):
    """Where P(x) = a x^2 + 2 h x + c falls through zero and where it rises through zero,
    per entry: two arrays (the second only if `rising`), NaN where P has no real root
    (every comparison with NaN is false, so callers skip it); a root "at infinity" (a = 0)
    comes out as +-inf; a double root (P only touches zero) is reported as both. With
    r = h + sign(h) sqrt(h^2 - a c) the roots are -r/a and -c/r, free of cancellation, and
    P'(-r/a) = -2 sign(h) sqrt(h^2 - a c): -r/a is the falling root when h >= 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = h * h
        disc -= a * c
        minus_r = np.sqrt(disc)
        np.copysign(minus_r, h, out=minus_r)
        minus_r += h
        np.negative(minus_r, out=minus_r)
        first, second = minus_r / a, c / minus_r
        h_down = np.signbit(h)
        return np.where(h_down, second, first), (np.where(h_down, first, second) if rising else None)


def _take(array, rows):
    """array[rows], or the array itself where rows is None (every row: no copy)."""
    return array if rows is None else array[rows]


def _winner_minus_all(values, winner):
    """values[r, winner[r]] - values[r, c] for every row r and class c."""
    return values[np.arange(len(winner)), winner][:, None] - values


class _TrigCurves:
    """Scores A cos t + B sin t + C with t = phi*Omega (rotate, slerp), held in x = tan(t/2),
    which grows with phi on [0, 1] because Omega <= pi. In x they read
    (G x^2 + 2 B x + K)/(1 + x^2) with G = C - A, K = C + A, so the margin
    dA cos t + dB sin t + c0 has the sign of (c0 - dA) x^2 + 2 dB x + (c0 + dA): its roots
    are a quadratic's, with no inverse trigonometry per class."""

    def __init__(self, G, B, K, omega):
        self.G, self.B, self.K, self.omega = G, B, K, omega
        self.x_end = np.tan(omega / 2)

    def to_x(self, rows, phi):
        return np.tan(phi * _take(self.omega, rows) / 2)

    def to_phi(self, rows, x):
        omega = _take(self.omega, rows)
        return np.divide(2.0 * np.arctan(x), omega, out=np.zeros_like(x), where=omega > 0)

    def scores(self, rows, x):
        x = x[:, None]
        return (_take(self.G, rows) * (x * x) + 2 * _take(self.B, rows) * x + _take(self.K, rows)) / (1.0 + x * x)

    def score_bounds(self):
        """Lower and upper bounds [M, C] of each score over the whole path:
        s = K + (G - K) f1(x) + 2 B f2(x) for x in [0, X], where f1 = x^2/(1 + x^2) runs from 0
        to X^2/(1 + X^2) and f2 = x/(1 + x^2) between 0 and min(X, 1)/(1 + min(X, 1)^2)."""
        X = self.x_end[:, None]
        quadratic = (self.G - self.K) * (X * X / (1 + X * X))
        linear = self.B * np.where(X <= 1, 2 * X / (1 + X * X), 1.0)
        lower = self.K + np.minimum(quadratic, 0) + np.minimum(linear, 0)
        upper = self.K + np.maximum(quadratic, 0) + np.maximum(linear, 0)
        return lower, upper

    def for_pieces(self, rows, columns=None):
        """Curves with one row per piece, that of row rows[p] (all rows where None), for
        the classes columns[p] (all where None)."""
        arrays = [_take(v, rows) for v in (self.G, self.B, self.K)]
        if columns is not None:
            arrays = [np.take_along_axis(v, columns, axis=1) for v in arrays]
        return _TrigCurves(*arrays, _take(self.omega, rows))

    def margin_quadratic(self, rows, winner, kappa=None):
        """Coefficients (a, h, c), each [len(rows), C] (rows None for all), of the quadratic
        a x^2 + 2 h x + c whose sign is that of the margin s_w - s_c - kappa for every class
        c, w = winner per row."""
        a = _winner_minus_all(_take(self.G, rows), winner)
        h = _winner_minus_all(_take(self.B, rows), winner)
        c = _winner_minus_all(_take(self.K, rows), winner)
        if kappa is not None:
            a -= kappa
            c -= kappa
        return a, h, c


class _LerpCurves:
    """Scores (S + phi V)/n(phi) (lerp), V = T - S, n^2 = 1 - 2 g phi + 2 g phi^2; here x = phi.
    The normalised points lie on slerp's arc from z to a', so `arc` (slerp's curves, or
    None) gives the score bounds."""

    def __init__(self, S, V, g, arc=None):
        self.S, self.V, self.g, self.arc = S, V, g, arc
        self.x_end = np.ones_like(g)

    def to_x(self, rows, phi):
        return phi

    def to_phi(self, rows, x):
        return x.copy()

    def scores(self, rows, x):
        g = _take(self.g, rows)
        norm = np.sqrt(np.maximum(1 - 2 * g * x + 2 * g * x * x, NORM_FLOOR))[:, None]
        return (_take(self.S, rows) + x[:, None] * _take(self.V, rows)) / norm

    def score_bounds(self):
        """As _TrigCurves.score_bounds: slerp's bounds, over the same arc."""
        return self.arc.score_bounds()

    def for_pieces(self, rows, columns=None):
        """As _TrigCurves.for_pieces."""
        arrays = [_take(v, rows) for v in (self.S, self.V)]
        if columns is not None:
            arrays = [np.take_along_axis(v, columns, axis=1) for v in arrays]
        return _LerpCurves(*arrays, _take(self.g, rows))

    def margin_quadratic(self, rows, winner, kappa=None):
        """As _TrigCurves.margin_quadratic: L = p + q phi itself without a budget, else
        Q = L^2 - kappa^2 n^2. Q's roots where L < 0 are not the margin's, but a budget is
        only applied within an argmax interval of w, where L >= 0 throughout, so there
        every root of Q is one of the margin's and the margin is negative where Q is."""
        p = _winner_minus_all(_take(self.S, rows), winner)
        q = _winner_minus_all(_take(self.V, rows), winner)
        if kappa is None:
            q *= 0.5
            return 0.0, q, p
        kappa2 = kappa * kappa
        g_kappa2 = _take(self.g, rows)[:, None] * kappa2
        half_a1 = p * q
        half_a1 += g_kappa2
        p *= p
        p -= kappa2
        q *= q
        q -= 2 * g_kappa2
        return q, half_a1, p


def _rotate_curves(z, s0, source_scores, predicted, target_dots, plane):
    """rotate's curves: with x = <z, a>, k = <z, a'>, the in-plane coordinate along e2 is
    y = (k - x cos theta)/sin theta; then G = s0 - 2A, K = s0 (C = s0 - A)."""
    cos_theta, sin_theta, theta, alpha, beta = plane
    sin_theta, alpha, beta = sin_theta[predicted], alpha[predicted], beta[predicted]
    x = source_scores
    y = np.divide(target_dots - x * cos_theta[predicted], sin_theta, out=np.zeros_like(x), where=sin_theta > 0)
    x, y = x[:, None], y[:, None]
    A = x * alpha + y * beta
    B = x * beta - y * alpha
    return _TrigCurves(s0 - 2 * A, B, s0, theta[predicted])


def _slerp_curves(z, s0, target_rows, target_dots, target_scores):
    """slerp's curves: A = s0, B = (<a', u> - k s0)/sin omega, C = 0."""
    sin_omega = _sin_between(z, target_rows, target_dots)
    omega = np.where(sin_omega > 0, np.arctan2(sin_omega, target_dots), 0.0)
    B = np.divide(target_scores - target_dots[:, None] * s0, sin_omega[:, None], out=np.zeros_like(s0),
                  where=sin_omega[:, None] > 0)
    return _TrigCurves(-s0, B, s0, omega)


def _sin_between(z, targets, dots):
    """sin of the angle between unit rows z and targets, given their dot products; 0 below
    DEGENERATE_SIN. sqrt((1 - k)(1 + k)) loses digits when the angle is small, so those
    rows are measured in full as |a' - k z|."""
    sin = np.sqrt(np.maximum((1 - dots) * (1 + dots), 0.0))
    close = np.flatnonzero(sin < CLOSE_SIN)
    if close.size:
        away = targets[close] - dots[close, None] * z[close]
        sin[close] = np.sqrt(np.einsum("md,md->m", away, away))
    return np.where(sin > DEGENERATE_SIN, sin, 0.0)


def _edit_planes(sources, targets, classes):
    """rotate's per-edit, per-class tables for all edits at once (one matrix product each):
    cos, sin and angle from a to a' [E, C], and alpha = <a, u>, beta = <e2, u> [E, C, C]."""
    n_edits, n_classes, dim = targets.shape
    flat_sources, flat_targets = sources.reshape(-1, dim), targets.reshape(-1, dim)
    cos_theta, e2, theta = _turn(flat_sources, flat_targets)
    sin_theta = np.where(theta > 0, np.sin(theta), 0.0)
    alpha = (flat_sources @ classes.T).reshape(n_edits, n_classes, n_classes)
    beta = (e2 @ classes.T).reshape(n_edits, n_classes, n_classes)
    shape = (n_edits, n_classes)
    return cos_theta.reshape(shape), sin_theta.reshape(shape), theta.reshape(shape), alpha, beta


class _Pieces:
    """Intervals as they are found: parallel arrays of row, start, end, class."""

    def __init__(self):
        self.parts: List[Tuple[np.ndarray, ...]] = []

    def add(self, rows, start, end, cls):
        self.parts.append((rows, start.copy(), end.copy(), cls.astype(np.int32)))

    def arrays(self):
        return _concatenate_pieces(self.parts)


def _concatenate_pieces(parts):
    if not parts:
        return (np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, np.int32))
    return tuple(np.concatenate(column) for column in zip(*parts))


def _max_rounds(n_classes: int) -> int:
    # Each round moves past at least one root of one of the C (C - 1) pair margins (two roots
    # each), so this bound is never reached unless something is wrong.
    return 2 * n_classes * n_classes + 8


def _probe_x(curves, rows, x):
    """x a PROBE_STEP of phi past x (at most phi = 1): where what holds next is read."""
    return curves.to_x(rows, np.minimum(curves.to_phi(rows, x) + PROBE_STEP, 1.0))


def _argmax_intervals(curves, n_rows, n_classes):
    """The budget-free split of [0, 1] per row: pieces (row, start, end, argmax class), in x."""
    pieces = _Pieces()
    rows = np.arange(n_rows)
    cur = np.zeros(n_rows)
    winner = curves.scores(None, _probe_x(curves, None, cur)).argmax(axis=1)
    for round_no in range(_max_rounds(n_classes)):
        if rows.size == 0:
            return pieces.arrays()
        falling, _ = _crossings(*curves.margin_quadratic(None if round_no == 0 else rows, winner), rising=False)
        stop = curves.x_end[rows]
        nxt = np.minimum(np.where(falling > cur[:, None], falling, np.inf).min(axis=1), stop)
        pieces.add(rows, cur, nxt, winner)
        going = nxt < stop
        rows, cur = rows[going], nxt[going]
        winner = curves.scores(rows, _probe_x(curves, rows, cur)).argmax(axis=1)
    raise RuntimeError("certification sweep did not finish (non-finite embeddings?)")


def _certified_intervals(curves, stretches, eps, class_distance, upper, floor, slice_pieces):
    """Split each stretch (row, start, end, w; in x) of an argmax interval of w into parts
    where w wins by eps |u_w - u_c| over every class c (class w) and where it does not
    (UNCERTIFIED). `upper` [M, C] and `floor` [M, 1] bound the rows' scores along the
    whole path (see _contenders). Works slice_pieces stretches at a time (arrays that fit
    in cache); within a slice, stretches are grouped by how many classes can come within
    the budget of w, and each group is solved on those classes only."""
    n_classes = class_distance.shape[0]
    found = []
    for lo in range(0, len(stretches[0]), slice_pieces):
        rows, start, end, winner = (column[lo:lo + slice_pieces] for column in stretches)
        slack = eps * class_distance[winner]
        for members, columns in _contenders(upper[rows] + slack, floor[rows], winner):
            group_rows = rows[members]
            if columns is None:
                group = curves.for_pieces(group_rows)
                group_slack, group_winner = slack[members], winner[members]
            else:
                group = curves.for_pieces(group_rows, columns)
                group_slack = np.take_along_axis(slack[members], columns, 1)
                group_winner = np.argmax(columns == winner[members, None], 1)
            at, begin, stop, column = _certify_slice(group, (start[members], end[members], group_winner),
                                                     group_slack, n_classes)
            if columns is not None:
                column = np.where(column >= 0, columns[at, np.maximum(column, 0)], column).astype(np.int32)
            found.append((group_rows[at], begin, stop, column))
    return _concatenate_pieces(found)


def _contenders(reach, floor, pad):
    """Groups (members, columns) of the rows (or intervals) of `reach` [M, C], an upper
    bound on what each class can score plus its allowance, given `floor` [M, 1], a lower
    bound on what the leader scores. A class whose reach stays under the floor can neither
    lead nor come within the budget of the leader, so it is left out: `columns` [m, K]
    lists each member's contenders, padded with `pad` (a contender always). Rows are
    grouped by their number of contenders so padding stays small; where most classes
    contend, columns is None (all classes)."""
    keep = reach + BOUND_GUARD >= floor
    counts = np.count_nonzero(keep, axis=1)
    n_classes = keep.shape[1]
    if counts.min() > n_classes * RESTRICT_BELOW:
        yield np.arange(len(counts)), None
        return
    # Three groups (a few classes, some, most) keep both the padding and the number of
    # separate array passes small.
    width = np.select([counts <= n_classes * FEW_CLASSES, counts <= n_classes * RESTRICT_BELOW],
                      [1, 2], 3)
    for size in np.unique(width):
        members = np.flatnonzero(width == size)
        if size == 3:
            yield members, None
            continue
        kept = keep[members]
        at, cols = np.nonzero(kept)
        slot = np.cumsum(kept, axis=1)[at, cols] - 1
        columns = np.repeat(pad[members][:, None], int(counts[members].max()), axis=1)
        columns[at, slot] = cols
        yield members, columns


def _certify_slice(curves, argmax_pieces, kappa, n_classes):
    """The budget sweep over intervals whose rows in `curves` are the intervals themselves
    (row p is interval p); the winner is fixed on each, so its margins' quadratics and
    their roots are found once and only the state moves from round to round."""
    start, end, winner = argmax_pieces
    a, h, c = curves.margin_quadratic(None, winner, kappa)
    falling, rising = _crossings(a, h, c)
    pieces = _Pieces()
    live = np.arange(len(start))
    cur = start.copy()
    for round_no in range(_max_rounds(n_classes)):
        if live.size == 0:
            return pieces.arrays()
        at = None if round_no == 0 else live
        x = _probe_x(curves, at, cur)[:, None]
        negative = (_take(a, at) * x + 2 * _take(h, at)) * x + _take(c, at) < 0
        after = cur[:, None]
        certified = ~negative.any(axis=1)
        up = _take(rising, at)
        lost = np.where(_take(falling, at) > after, _take(falling, at), np.inf).min(axis=1)
        regained = np.where(negative & (up > after), up, np.where(negative, np.inf, -np.inf)).max(axis=1)
        stop = end[live]
        nxt = np.minimum(np.where(certified, lost, regained), stop)
        pieces.add(live, cur, nxt, np.where(certified, winner[live], UNCERTIFIED))
        going = nxt < stop
        live, cur = live[going], nxt[going]
    raise RuntimeError("certification sweep did not finish (non-finite embeddings?)")


def _merged_in_phi(curves, pieces):
    """Pieces sorted by (row, start), neighbours of one row and one class joined, ends
    turned from x into phi (an end at the row's last x is 1 exactly)."""
    rows, start, end, cls = pieces
    order = np.lexsort((start, rows))
    rows, start, end, cls = rows[order], start[order], end[order], cls[order]
    new = np.ones(rows.size, dtype=bool)
    new[1:] = (rows[1:] != rows[:-1]) | (cls[1:] != cls[:-1])
    first = np.flatnonzero(new)
    last = np.append(first[1:] - 1, rows.size - 1)
    rows, start, end, cls = rows[first], start[first], end[last], cls[first]
    end_phi = np.where(end >= curves.x_end[rows], 1.0, np.minimum(curves.to_phi(rows, end), 1.0))
    return rows, np.minimum(curves.to_phi(rows, start), 1.0), end_phi, cls


def _solve_edit(curves, predicted, budgets, class_distance, chunk):
    """Every budget's pieces (row, start, end, class; in phi, merged) for one chunk and edit."""
    n_rows, n_classes = predicted.size, class_distance.shape[0]
    lower, upper = curves.score_bounds()
    floor = lower.max(axis=1, keepdims=True)
    found = []
    for members, columns in _contenders(upper, floor, predicted):
        everyone = members.size == n_rows and columns is None
        rows, start, end, column = _argmax_intervals(curves if everyone else curves.for_pieces(members, columns),
                                                     len(members), n_classes)
        found.append((members[rows], start, end, column if columns is None else columns[rows, column]))
    argmax_pieces = _concatenate_pieces(found)
    out = {0.0: argmax_pieces}
    # Budgets nest: where w is certified under eps it is under every smaller budget, so
    # each budget, in increasing order, only refines the stretches the previous one
    # certified; what one leaves uncertified stays so under the larger ones.
    pending, settled = argmax_pieces, []
    for eps in sorted(eps for eps in budgets if eps > 0):
        refined = _certified_intervals(curves, pending, eps, class_distance, upper, floor, 4 * chunk)
        certified = refined[3] != UNCERTIFIED
        settled.append(tuple(column[~certified] for column in refined))
        pending = tuple(column[certified] for column in refined)
        out[eps] = _concatenate_pieces(settled + [pending])
    return {eps: _merged_in_phi(curves, pieces) for eps, pieces in out.items()}


@dataclass
class Certification:
    """The exact split of [0, 1] for every (image, edit) under one transform and budget.

    Arrays indexed [image, edit]: `extent` (certified extent: the end of the first
    interval if it is certified for the prediction, else 0), `n_intervals`, `next_class`
    (class of the interval after the first boundary; UNCERTIFIED for an uncertified
    stretch, NO_BOUNDARY if the first interval covers [0, 1]) and `flip_class` (the first
    argmax class other than the prediction along the path, the same under every budget;
    NO_BOUNDARY if there is none). `predicted` [image] is the argmax at phi = 0. The
    interval lists are stored flat, edit by edit: row edit * n_images + image owns pieces
    offsets[row]:offsets[row + 1] of starts, ends, classes (UNCERTIFIED for none)."""

    transform: str
    budget: float
    n_images: int
    predicted: np.ndarray
    extent: np.ndarray
    n_intervals: np.ndarray
    next_class: np.ndarray
    flip_class: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    classes: np.ndarray

    def intervals(self, image: int, edit: int) -> List[Tuple[float, float, Optional[int]]]:
        """[(start, end, class index or None for uncertified)], in order, covering [0, 1]."""
        row = edit * self.n_images + image
        span = slice(self.offsets[row], self.offsets[row + 1])
        return [(float(s), float(e), None if c == UNCERTIFIED else int(c))
                for s, e, c in zip(self.starts[span], self.ends[span], self.classes[span])]


def _per_image(values, n_images):
    """Rows edit * n_images + image -> an [image, edit] array."""
    return np.ascontiguousarray(values.reshape(-1, n_images).T)


def _summarise(transform, budget, predicted, merged, flip_class):
    rows, start, end, cls = merged
    n_images = len(predicted)
    n_rows = flip_class.size
    counts = np.bincount(rows, minlength=n_rows)
    offsets = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    first = offsets[:-1]
    row_prediction = np.tile(predicted, n_rows // max(n_images, 1))
    extent = np.where(cls[first] == row_prediction, end[first], 0.0)
    second = np.minimum(first + 1, max(rows.size - 1, 0))
    next_class = np.where(counts > 1, cls[second], NO_BOUNDARY).astype(np.int32)
    return Certification(transform, float(budget), n_images, predicted, _per_image(extent, n_images),
                         _per_image(counts.astype(np.int32), n_images), _per_image(next_class, n_images),
                         _per_image(flip_class, n_images), offsets, start, end, cls)


def _first_flip(merged_argmax, predicted, n_rows):
    """Per row, the first argmax class other than the prediction (NO_BOUNDARY if none)."""
    rows, _, _, cls = merged_argmax
    other = cls != predicted[rows % len(predicted)]
    rows, cls = rows[other], cls[other]
    # Pieces are sorted by row then start, so a row's first piece here is its first flip.
    first = np.ones(rows.size, dtype=bool)
    first[1:] = rows[1:] != rows[:-1]
    flip = np.full(n_rows, NO_BOUNDARY, dtype=np.int32)
    flip[rows[first]] = cls[first]
    return flip


def certify(image_embeddings, class_embeddings, target_embeddings, *, source_embeddings=None,
            transform: str = "rotate", budgets: Sequence[float] = (0.0,),
            chunk_elements: int = CHUNK_ELEMENTS) -> List[Certification]:
    """Solve every (image, edit) exactly, once per budget.

    image_embeddings [N, D], class_embeddings [C, D] (the zero-shot classifier),
    target_embeddings [E, C, D] (edit e applied to class c's prompt) and source_embeddings
    [C, D] or [E, C, D] (default: the class embeddings). Every vector is normalised first,
    so a length or logit scale changes nothing. Each image moves along the edit of its own
    predicted class. Returns one Certification per budget, in the order given."""
    _check_transform(transform)
    budgets = [float(eps) for eps in budgets]
    if any(not eps >= 0 for eps in budgets):
        raise ValueError(f"budgets must be non-negative numbers, got {budgets}")
    images = np.asarray(image_embeddings)
    classes = unit_rows(class_embeddings)
    targets = unit_rows(target_embeddings)
    if targets.ndim != 3 or targets.shape[1:] != classes.shape:
        raise ValueError(f"target embeddings must be [edits, {classes.shape[0]}, {classes.shape[1]}], "
                         f"got {list(targets.shape)}")
    n_images, (n_edits, n_classes, dim) = images.shape[0], targets.shape
    shared_sources = source_embeddings is None or np.ndim(source_embeddings) == 2
    sources = classes if source_embeddings is None else unit_rows(source_embeddings)
    if transform == "rotate":
        planes = _edit_planes(np.broadcast_to(sources, targets.shape), targets, classes)
    else:
        target_class_scores = (targets.reshape(-1, dim) @ classes.T).reshape(n_edits, n_classes, n_classes)
    class_distance = np.sqrt(np.maximum(2.0 - 2.0 * (classes @ classes.T), 0.0))
    np.fill_diagonal(class_distance, 0.0)

    predicted = np.zeros(n_images, dtype=np.int64)
    row_type = np.int32 if n_images * n_edits < 2 ** 31 else np.int64   # row ids of every interval found: keep them small
    found = {eps: [[] for _ in range(n_edits)] for eps in budgets + [0.0]}
    chunk = max(1, chunk_elements // max(n_classes, 1))
    for lo in range(0, n_images, chunk):
        z = unit_rows(images[lo:lo + chunk])
        s0 = z @ classes.T
        pred = s0.argmax(axis=1)
        predicted[lo:lo + len(z)] = pred
        picked = np.arange(len(z))
        if transform == "rotate" and shared_sources:
            source_scores = (s0 if source_embeddings is None else z @ sources.T)[picked, pred]
        for e in range(n_edits):
            target_rows = targets[e][pred]
            target_dots = _rowdot(z, target_rows)
            if transform == "rotate":
                if not shared_sources:
                    source_scores = _rowdot(z, sources[e][pred])
                plane = tuple(table[e] for table in planes)
                curves = _rotate_curves(z, s0, source_scores, pred, target_dots, plane)
            elif transform == "slerp":
                curves = _slerp_curves(z, s0, target_rows, target_dots, target_class_scores[e][pred])
            else:
                target_scores = target_class_scores[e][pred]
                arc = _slerp_curves(z, s0, target_rows, target_dots, target_scores)
                curves = _LerpCurves(s0, target_scores - s0, 1 - target_dots, arc)
            for eps, (rows, start, end, cls) in _solve_edit(curves, pred, found, class_distance, chunk).items():
                found[eps][e].append(((e * n_images + lo + rows).astype(row_type), start, end, cls))
    n_rows = n_images * n_edits
    merged = {eps: _concatenate_pieces([part for groups in per_edit for part in groups])
              for eps, per_edit in found.items()}
    flip = _first_flip(merged[0.0], predicted, n_rows)
    return [_summarise(transform, eps, predicted, merged[eps], flip) for eps in budgets]
