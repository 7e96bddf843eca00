"""The exact Fourier spectrum of a LightGBM tree ensemble on {0,1}^n.

A leaf reached by the path conditions x_{f_1} = v_1, …, x_{f_d} = v_d with value w is the function
w · Π_j [x_{f_j} = v_j] = w · Π_j (1 + s_j (-1)^{x_{f_j}}) / 2 with s_j = +1 for v_j = 0 and -1 for
v_j = 1, i.e. Σ_{T ⊆ path} (w / 2^d) Π_{j∈T} s_j · χ_T. Summing over leaves and trees gives the
ensemble's spectrum exactly (this is the recursion N[S] = (L[S]+R[S])/2, N[S∪{i}] = (L[S]-R[S])/2
of the papers, unrolled per leaf so that all leaves of all trees expand in a few numpy operations).

LightGBM's saved leaf values already include shrinkage and the boost-from-average init score, so
the sum of leaf values is the model's raw prediction; we read them from ``model_to_string()``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spex.engine import sets
from spex.engine.spectrum import Spectrum

_MISSING_ZERO = 1  # LightGBM decision_type bits 2-3: 0 none, 1 zero-as-missing, 2 NaN


@dataclass
class _Forest:
    """All trees flattened into global arrays (internal nodes and leaves numbered globally)."""

    feature: np.ndarray  # (I,) split feature of each internal node
    zero_left: np.ndarray  # (I,) bool: x=0 goes to the left child
    one_left: np.ndarray  # (I,) bool: x=1 goes to the left child
    parent_internal: np.ndarray  # (I,) parent internal node or -1 (root)
    side_internal: np.ndarray  # (I,) 0 if the node is its parent's left child, 1 if right
    parent_leaf: np.ndarray  # (L,) parent internal node or -1 (single-leaf tree)
    side_leaf: np.ndarray  # (L,)
    leaf_value: np.ndarray  # (L,)
    scale: float  # 1/num_trees for averaged (random-forest) output, else 1


def _parse(model_text: str) -> _Forest:
    header, _, body = model_text.partition("\nTree=")
    average = "average_output" in header.split("\n")
    blocks = ("Tree=" + body).split("\nend of trees")[0].split("\nTree=")
    feats, zl, ol, pint, sint, pleaf, sleaf, values = [], [], [], [], [], [], [], []
    i_off = l_off = 0
    for block in blocks:  # a loop over trees (parsing text), not over masks or coefficients
        fields = dict(line.split("=", 1) for line in block.strip().split("\n")[1:] if "=" in line)
        num_leaves = int(fields["num_leaves"])
        leaf_value = np.array(fields["leaf_value"].split(), dtype=np.float64)
        values.append(leaf_value)
        if num_leaves == 1:
            pleaf.append(np.array([-1]))
            sleaf.append(np.array([0]))
            l_off += 1
            continue
        if int(fields.get("num_cat", "0")) > 0:
            raise ValueError("categorical splits are not supported: masks are numeric 0/1 features")
        feature = np.array(fields["split_feature"].split(), dtype=np.int64)
        threshold = np.array(fields["threshold"].split(), dtype=np.float64)
        decision = np.array(fields["decision_type"].split(), dtype=np.int64)
        left = np.array(fields["left_child"].split(), dtype=np.int64)
        right = np.array(fields["right_child"].split(), dtype=np.int64)
        default_left = (decision & 2) > 0
        zero_missing = ((decision >> 2) & 3) == _MISSING_ZERO
        feats.append(feature)
        zl.append(np.where(zero_missing, default_left, 0.0 <= threshold))
        ol.append(1.0 <= threshold)
        n_int = num_leaves - 1
        parent_i = np.full(n_int, -1, dtype=np.int64)
        side_i = np.zeros(n_int, dtype=np.int64)
        parent_l = np.full(num_leaves, -1, dtype=np.int64)
        side_l = np.zeros(num_leaves, dtype=np.int64)
        nodes = np.arange(n_int)
        for child, side in ((left, 0), (right, 1)):
            is_internal = child >= 0
            parent_i[child[is_internal]] = nodes[is_internal] + i_off
            side_i[child[is_internal]] = side
            parent_l[~child[~is_internal]] = nodes[~is_internal] + i_off
            side_l[~child[~is_internal]] = side
        pint.append(parent_i)
        sint.append(side_i)
        pleaf.append(parent_l)
        sleaf.append(side_l)
        i_off += n_int
        l_off += num_leaves

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return _Forest(
        feature=cat(feats, np.int64),
        zero_left=cat(zl, bool),
        one_left=cat(ol, bool),
        parent_internal=cat(pint, np.int64),
        side_internal=cat(sint, np.int64),
        parent_leaf=cat(pleaf, np.int64),
        side_leaf=cat(sleaf, np.int64),
        leaf_value=cat(values, np.float64),
        scale=1.0 / len(blocks) if average else 1.0,
    )


def _leaf_paths(forest: _Forest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per leaf: path features (L, depth) and signs (PAD/0 where no condition), and reachability."""
    n_leaves = len(forest.leaf_value)
    node, side = forest.parent_leaf.copy(), forest.side_leaf.copy()
    feats, signs = [], []
    reachable = np.ones(n_leaves, dtype=bool)
    while (node >= 0).any():  # one step per tree level, vectorised over all leaves
        active = node >= 0
        safe = np.where(active, node, 0)
        goes0 = np.where(side == 0, forest.zero_left[safe], ~forest.zero_left[safe])
        goes1 = np.where(side == 0, forest.one_left[safe], ~forest.one_left[safe])
        condition = active & (goes0 != goes1)  # exactly one value of x_f reaches this side
        reachable &= ~(active & ~goes0 & ~goes1)
        feats.append(np.where(condition, forest.feature[safe], sets.PAD))
        signs.append(np.where(condition, np.where(goes0, 1, -1), 0))
        side = np.where(active, forest.side_internal[safe], 0)
        node = np.where(active, forest.parent_internal[safe], -1)
    if not feats:
        return np.zeros((n_leaves, 0), np.int64), np.zeros((n_leaves, 0), np.int64), reachable
    f = np.stack(feats, axis=1)
    s = np.stack(signs, axis=1)
    # A feature tested twice on one path: same side -> one condition; opposite sides -> unreachable.
    order = np.argsort(np.where(f < 0, np.iinfo(np.int64).max, f), axis=1, kind="stable")
    f = np.take_along_axis(f, order, axis=1)
    s = np.take_along_axis(s, order, axis=1)
    repeat = np.zeros_like(f, dtype=bool)
    repeat[:, 1:] = (f[:, 1:] == f[:, :-1]) & (f[:, 1:] >= 0)
    conflict = repeat & (s != np.roll(s, 1, axis=1))
    reachable &= ~conflict.any(axis=1)
    f = np.where(repeat, sets.PAD, f)
    s = np.where(repeat, 0, s)
    return f, s, reachable


def tree_spectrum(model_text: str, n: int) -> Spectrum:
    """Exact spectrum of a LightGBM model given as ``booster.model_to_string()``."""
    forest = _parse(model_text)
    feats, signs, reachable = _leaf_paths(forest)
    values = forest.leaf_value * forest.scale
    members_parts, value_parts = [], []
    depth = (feats >= 0).sum(axis=1)
    for d in np.unique(depth[reachable]):  # a loop over path lengths (<= max depth)
        rows = reachable & (depth == d)
        sel = np.argsort(feats[rows] < 0, axis=1, kind="stable")[:, : int(d)]  # conditions first
        f = np.take_along_axis(feats[rows], sel, axis=1)
        s = np.take_along_axis(signs[rows], sel, axis=1)
        if d == 0:  # leaves of single-leaf trees (or paths with no effective condition)
            members_parts.append(np.zeros((int(rows.sum()), 0), np.int32))
            value_parts.append(values[rows])
            continue
        pats = sets.subset_patterns(int(d))  # (P, d)
        sub = np.where(pats[None], f[:, None, :], sets.PAD).reshape(-1, int(d))
        sign = np.where(pats[None], s[:, None, :], 1).prod(axis=2).reshape(-1)
        members_parts.append(sets.canonical(sub))
        value_parts.append(np.repeat(values[rows] / 2.0 ** int(d), len(pats)) * sign)
    if not members_parts:
        return Spectrum(n, np.zeros((1, 0), np.int32), np.zeros(1))
    width = max(m.shape[1] for m in members_parts)
    members = np.concatenate([sets.pad_to(m, width) for m in members_parts])
    merged, coefficients = sets.group_sum(members, np.concatenate(value_parts), n)
    return Spectrum(n, merged, coefficients, merge=False)


def widen_model(model_text: str, features: np.ndarray, n: int) -> str:
    """The model text of a booster trained on the columns ``features`` of the masks, rewritten as
    the same model over all n features (column j becomes feature ``features[j]``).

    Why: a screened proxy (:mod:`spex.engine.methods.screening`) is trained on a few dozen columns,
    but its spectrum, its tracking record and anyone who loads it speak of the n features of the
    masks. Only feature indices and names change; leaf values and thresholds are copied verbatim, so
    the widened model predicts on (B, n) masks exactly what the original predicts on their
    ``features`` columns. ``tree_sizes`` is dropped (it holds byte lengths of the old tree texts;
    LightGBM then parses the trees one after another)."""
    features = np.asarray(features, dtype=np.int64)
    if features.ndim != 1 or (len(features) and (features.min() < 0 or features.max() >= n)):
        raise ValueError(f"features must be indices in [0, {n}); got {features!r}")
    head, sep, rest = model_text.partition("\nTree=")
    body, sep_end, tail = (sep + rest).partition("\nend of trees")
    infos: list[str] = []
    lines = []
    for line in head.split("\n"):
        key, eq, value = line.partition("=")
        if eq and key == "feature_infos":
            infos = value.split(" ")
            wide = ["none"] * n
            for j, info in zip(features.tolist(), infos, strict=True):
                wide[j] = info
            line = "feature_infos=" + " ".join(wide)
        elif eq and key == "max_feature_idx":
            line = f"max_feature_idx={n - 1}"
        elif eq and key == "feature_names":
            line = "feature_names=" + " ".join(f"Column_{i}" for i in range(n))
        elif eq and key == "tree_sizes":
            continue
        lines.append(line)
    out_body = []
    for line in body.split("\n"):
        if line.startswith("split_feature="):
            local = np.array(line[len("split_feature="):].split(), dtype=np.int64)
            line = "split_feature=" + " ".join(map(str, features[local].tolist()))
        out_body.append(line)
    out_tail = []
    for line in tail.split("\n"):  # feature_importances: Column_j=count
        key, eq, value = line.partition("=")
        if eq and key.startswith("Column_") and key[len("Column_"):].isdigit():
            line = f"Column_{features[int(key[len('Column_'):])]}={value}"
        out_tail.append(line)
    return "\n".join(lines) + "\n".join(out_body) + sep_end + "\n".join(out_tail)
