"""The data lens: which training examples (and which combinations of them) a prediction rests on.

A feature is one training example or one group of them. The value of a mask is obtained by
*retraining* on the kept examples only and reading the retrained model's margin on the target
example's true class (its logit minus the best other logit: > 0 iff the target is classified right).
Removing a mislabelled near-duplicate of the target raises the value; two copies of the same helpful
example substitute for each other (a negative pairwise interaction).

Retraining thousands of times has to be cheap, so the built-in :class:`LogisticTrainer` fits L2-
regularised logistic regression on frozen, mean-pooled encoder embeddings (embedded once) for a whole
batch of masks at once:

* every mask is a row of example weights (B, n); all B models take their gradient steps together as
  batched tensor products, so the cost per step is one (B, n) x (n, r) product each way;
* the optimum lies in the span of the (centred) training embeddings, so the problem is solved exactly
  in that r <= n dimensional basis (thin SVD), where the Hessian at the start is *diagonal*: the
  steps are Newton-preconditioned at no extra cost and converge in tens of steps;
* a fixed number of steps, no data-dependent stopping, so a mask's value does not depend on the
  other masks in its batch (the ablation store caches values per mask).

Heavier retraining (fine-tuning a transformer per subset) plugs in through :class:`Trainer`;
:class:`SklearnTrainer` is the reference loop of scikit-learn fits (same objective) used to check the
batched trainer and as the benchmark baseline.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from spex.content import bytes_digest
from spex.errors import SpexInputError
from spex.lenses.base import ValueFunction, fingerprint_of
from spex.lenses.registrations.data import (
    LENS_VERSION,
    DataOptions,
    DataSubject,
    check_target_label,
    load_training_set,
    preferred_batch,
)

__all__ = ["LENS_VERSION", "DataLens", "DataProblem", "LogisticTrainer", "SklearnTrainer", "Trainer", "data",
           "from_spec"]


@dataclass
class DataProblem:
    """What a trainer needs: the training set, the target, and (if it wants them) their embeddings."""

    texts: list[str]
    labels: np.ndarray          # int class indices (n,)
    classes: list[Any]          # class names in index order
    target_text: str
    target_class: int
    embeddings: np.ndarray | None = None         # (n, d) float64
    target_embedding: np.ndarray | None = None   # (d,)
    cache: dict[str, Any] = field(default_factory=dict)  # trainer-private precomputation

    @property
    def n_classes(self) -> int:
        return len(self.classes)


class Trainer(ABC):
    """Retrains one model per mask row and returns the target margin of each.

    ``keep`` is a bool (B, n_train) matrix over training examples. Implementations must be
    deterministic per row (a value must not depend on the other rows of the batch) and describe every
    setting that changes the result in :meth:`options` (it enters the lens fingerprint).
    """

    name: str = "trainer"
    needs_embeddings: bool = True

    @abstractmethod
    def margins(self, keep: np.ndarray, problem: DataProblem) -> np.ndarray:
        """Margins (B,) of the target's true class under a model trained on each kept subset."""

    def options(self) -> dict[str, Any]:
        return {}


def _standardise(problem: DataProblem) -> tuple[np.ndarray, np.ndarray]:
    """Centre on the full training set and divide by one global scale, so λ means the same for any encoder."""
    X = np.asarray(problem.embeddings, dtype=np.float64)
    mu = X.mean(axis=0)
    scale = float(np.sqrt(((X - mu) ** 2).sum(axis=1).mean() / max(X.shape[1], 1))) or 1.0
    return (X - mu) / scale, (np.asarray(problem.target_embedding, dtype=np.float64) - mu) / scale


class LogisticTrainer(Trainer):
    """Batched L2 logistic regression on frozen embeddings (softmax over classes; sigmoid for two).

    Objective per mask b: mean cross-entropy over the kept examples + ``l2``/2 · ||W||² (softmax
    weights, one column per class; bias not penalised); an empty subset gives W = 0 (margin 0). ``steps`` preconditioned gradient steps from 0
    (the preconditioner is the exact Hessian at the start, in the SVD basis).
    """

    name = "logistic"

    def __init__(self, l2: float = 1.0, steps: int = 50, dtype: torch.dtype = torch.float64) -> None:
        if l2 <= 0:
            raise SpexInputError(f"l2 must be > 0 (it keeps every subset's problem well posed); got {l2}")
        if steps < 1:
            raise SpexInputError(f"steps must be >= 1; got {steps}")
        self.l2, self.steps, self.dtype = float(l2), int(steps), dtype

    def options(self) -> dict[str, Any]:
        return {"l2": self.l2, "steps": self.steps, "dtype": str(self.dtype)}

    def _l2_eff(self, problem: DataProblem) -> float:
        """Two classes are fitted with one weight vector w = w1 - w0; the softmax penalty
        λ/2·(||w0||² + ||w1||²) is λ/4·||w||² at its optimum (w0 = -w1), so ``l2`` means the same for
        two classes as for more."""
        return self.l2 / 2 if problem.n_classes == 2 else self.l2

    def _basis(self, problem: DataProblem) -> dict[str, torch.Tensor]:
        key = f"logistic-basis-{self.dtype}"
        if key not in problem.cache:
            X, xt = _standardise(problem)
            U, S, Vt = np.linalg.svd(X, full_matrices=False)
            r = int((S > S.max() * 1e-10).sum()) if S.size else 0
            Z = U[:, :r] * S[:r]                 # training rows in the basis of their span (centred)
            zt = Vt[:r] @ xt                     # the target's component in that span (the rest meets w = 0)
            n = len(Z)
            curvature = 0.25 if problem.n_classes == 2 else 0.5   # bound on the loss's second derivative
            precond = np.r_[1.0 / (curvature * S[:r] ** 2 / n + self._l2_eff(problem)), 1.0 / curvature]  # bias last
            t = lambda a: torch.as_tensor(a, dtype=self.dtype)  # noqa: E731
            problem.cache[key] = {"Z": t(np.c_[Z, np.ones(n)]), "zt": t(np.r_[zt, 1.0]), "P": t(precond),
                                  "R": t(np.r_[np.ones(r), 0.0])}
        return problem.cache[key]

    def margins(self, keep: np.ndarray, problem: DataProblem) -> np.ndarray:
        basis = self._basis(problem)
        Z, zt, P, R = basis["Z"], basis["zt"], basis["P"], basis["R"]
        M = torch.as_tensor(np.asarray(keep), dtype=self.dtype)
        count = M.sum(1, keepdim=True).clamp(min=1.0)
        Mn = M / count                                           # (B, n) example weights of each mean
        y = torch.as_tensor(problem.labels, dtype=torch.long)
        C = problem.n_classes
        B, D = len(M), Z.shape[1]
        if C == 2:
            sign = (2 * y - 1).to(self.dtype)                    # class 1 -> +1
            w = torch.zeros(B, D, dtype=self.dtype)
            for _ in range(self.steps):
                f = w @ Z.T                                      # (B, n) logit of class 1
                resid = (torch.sigmoid(f) - (sign > 0).to(self.dtype)) * Mn
                grad = resid @ Z + self._l2_eff(problem) * R * w
                w = w - grad * P
            f_t = w @ zt
            return (f_t if problem.target_class == 1 else -f_t).double().numpy()
        Y = torch.nn.functional.one_hot(y, C).to(self.dtype)
        W = torch.zeros(B, D, C, dtype=self.dtype)
        for _ in range(self.steps):
            logits = torch.einsum("nd,bdc->bnc", Z, W)
            resid = (torch.softmax(logits, -1) - Y) * Mn[..., None]
            grad = torch.einsum("nd,bnc->bdc", Z, resid) + self.l2 * R[None, :, None] * W
            W = W - grad * P[None, :, None]
        logits_t = torch.einsum("d,bdc->bc", zt, W)
        own = logits_t[:, problem.target_class]
        others = logits_t.clone()
        others[:, problem.target_class] = float("-inf")
        return (own - others.max(dim=1).values).double().numpy()


class SklearnTrainer(Trainer):
    """One scikit-learn fit per mask, same objective as :class:`LogisticTrainer` (reference / baseline).

    Also the template for heavier trainers: anything that can fit one subset at a time.
    """

    name = "sklearn-logistic"

    def __init__(self, l2: float = 1.0, tol: float = 1e-8, max_iter: int = 10_000) -> None:
        self.l2, self.tol, self.max_iter = float(l2), float(tol), int(max_iter)

    def options(self) -> dict[str, Any]:
        return {"l2": self.l2, "tol": self.tol, "max_iter": self.max_iter}

    def margins(self, keep: np.ndarray, problem: DataProblem) -> np.ndarray:
        from sklearn.linear_model import LogisticRegression

        X, xt = _standardise(problem)
        y, C, c = problem.labels, problem.n_classes, problem.target_class
        out = np.zeros(len(keep))
        for b, row in enumerate(np.asarray(keep, dtype=bool)):
            present = np.unique(y[row])
            if len(present) == 0:
                continue
            if len(present) == 1:
                # One class only: sklearn refuses to fit and the optimum's bias is unbounded; report the
                # bias of the add-one smoothed prior instead (finite, and of the right sign).
                out[b] = np.log1p(row.sum()) * (1.0 if present[0] == c else -1.0)
                continue
            # sklearn: C·Σ loss + ½||w||²  ==  mean loss + λ/2·||w||² with C = 1/(λ·k); its binary model
            # has one weight vector w = w1 − w0, whose softmax-equivalent penalty is λ/4·||w||²: C doubles.
            strength = (2.0 if C == 2 else 1.0) / (self.l2 * row.sum())
            clf = LogisticRegression(C=strength, tol=self.tol, max_iter=self.max_iter)
            clf.fit(X[row], y[row])
            scores = clf.decision_function(xt[None])[0]
            if C == 2:
                out[b] = scores if c == 1 else -scores
            else:
                full = np.full(C, -np.inf)
                full[clf.classes_] = scores
                out[b] = full[c] - np.max(np.delete(full, c))
        return out


class DataLens(ValueFunction):
    """Value function of the data lens (build it with :func:`data`)."""

    def __init__(self, problem: DataProblem, *, groups: Sequence[Hashable] | None, trainer: Trainer,
                 encoder_identity: str | None) -> None:
        self.problem, self.trainer = problem, trainer
        n = len(problem.texts)
        if groups is None:
            self.group_names: list[Hashable] = list(range(n))
            self.group_of = np.arange(n)
            self.feature_labels = list(problem.texts)
        else:
            groups = list(groups)
            if len(groups) != n:
                raise SpexInputError(f"groups must give one group per training example ({n}); got {len(groups)}")
            order: dict[Hashable, int] = {}
            for g in groups:
                order.setdefault(g, len(order))
            self.group_names = list(order)
            self.group_of = np.array([order[g] for g in groups])
            self.feature_labels = [str(g) for g in self.group_names]
        self.n_features = len(self.group_names)
        emb_digest = None
        if problem.embeddings is not None:
            emb_digest = bytes_digest(np.ascontiguousarray(problem.embeddings, dtype=np.float64).tobytes()
                                      + np.ascontiguousarray(problem.target_embedding, dtype=np.float64).tobytes())
        self.encoder_identity = encoder_identity
        self.fingerprint = fingerprint_of(
            lens="data", version=LENS_VERSION, texts=problem.texts, labels=problem.labels.tolist(),
            classes=[str(c) for c in problem.classes], target=problem.target_text, target_class=problem.target_class,
            groups=self.group_of.tolist(), trainer=trainer.name, trainer_options=trainer.options(),
            embeddings=emb_digest, encoder=encoder_identity if emb_digest is None else None,
        )
        self.full_value = float(self.compute(np.ones((1, self.n_features), dtype=bool))[0])

    @property
    def preferred_batch(self) -> int:
        """Masks per :meth:`compute` call the ablation engine should send (it caps them at its
        ``max_batch``): :func:`spex.lenses.registrations.data.preferred_batch` of the training set's
        size, since one call retrains a (B, n_train) batch whatever the grouping."""
        return preferred_batch(len(self.problem.texts))

    def example_masks(self, masks: np.ndarray) -> np.ndarray:
        """Masks over groups -> masks over training examples."""
        return np.asarray(masks, dtype=bool)[:, self.group_of]

    def compute(self, masks: np.ndarray) -> np.ndarray:
        return np.asarray(self.trainer.margins(self.example_masks(masks), self.problem), dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "lens": "data", "n_train": len(self.problem.texts),
                "grouped": self.n_features != len(self.problem.texts), "target": self.problem.target_text,
                "target_label": str(self.problem.classes[self.problem.target_class]),
                "classes": [str(c) for c in self.problem.classes], "trainer": self.trainer.name,
                "trainer_options": self.trainer.options(), "encoder": self.encoder_identity,
                "full_value": self.full_value}


Encoder = Any  # LoadedModel | str (a URI for spex.models.load) | Callable[[list[str]], array (N, d)]


def data(train_texts: Sequence[str], train_labels: Sequence[Hashable], target_text: str, target_label: Hashable,
         *, encoder: Encoder = "builtin:minilm-l6", groups: Sequence[Hashable] | None = None,
         trainer: Trainer | None = None, classes: Sequence[Hashable] | None = None) -> DataLens:
    """A value function over training examples (or ``groups`` of them): ``vf(masks (B, n)) -> (B,)``.

    Each mask retrains on the kept examples; the value is the retrained model's margin on
    ``target_label`` for ``target_text``. ``encoder`` embeds the texts once (mean pooling): a
    :class:`~spex.models.LoadedModel`, a URI for :func:`spex.models.load`, or a callable texts ->
    array. ``trainer`` defaults to :class:`LogisticTrainer`. ``classes`` fixes the class order
    (default: sorted labels).
    """
    texts = [str(t) for t in train_texts]
    labels = list(train_labels)
    if not texts or len(texts) != len(labels):
        raise SpexInputError(f"train_texts and train_labels must be non-empty and of equal length; got {len(texts)} "
                             f"texts and {len(labels)} labels")
    class_list = list(classes) if classes is not None else sorted(set(labels) | {target_label}, key=str)
    index = {c: i for i, c in enumerate(class_list)}
    unknown = sorted({str(label) for label in labels + [target_label] if label not in index})
    if unknown:
        raise SpexInputError(f"labels {unknown} are not among classes {class_list}")
    check_target_label(labels, target_label)
    if len(class_list) < 2:
        raise SpexInputError("the data lens needs at least two classes")
    trainer = trainer or LogisticTrainer()
    problem = DataProblem(texts=texts, labels=np.array([index[label] for label in labels]), classes=class_list,
                          target_text=str(target_text), target_class=index[target_label])
    identity = None
    if trainer.needs_embeddings:
        vectors, identity = _embed_all(encoder, texts + [str(target_text)])
        problem.embeddings, problem.target_embedding = vectors[:-1], vectors[-1]
    return DataLens(problem, groups=groups, trainer=trainer, encoder_identity=identity)


def _embed_all(encoder: Encoder, texts: list[str]) -> tuple[np.ndarray, str | None]:
    from spex.models import LoadedModel, as_loaded
    from spex.models.scoring import embed

    if callable(encoder) and not isinstance(encoder, (str, LoadedModel)):
        vectors = np.asarray(encoder(texts), dtype=np.float64)
        identity = getattr(encoder, "__qualname__", type(encoder).__name__)
    else:
        loaded = as_loaded(encoder)
        vectors, identity = embed(loaded, texts), loaded.identity
    if vectors.ndim != 2 or len(vectors) != len(texts) or not np.isfinite(vectors).all():
        raise SpexInputError(f"the encoder must return finite embeddings of shape ({len(texts)}, d); got {vectors.shape}")
    return vectors, identity



def from_spec(options: DataOptions, subject: DataSubject, model: Any) -> DataLens:
    """The value function of one spec subject (``lens: data``): the options' training set, embedded
    by the audited model (``encoder: model``) or by the model they name."""
    rows = load_training_set(options)
    encoder = model if options.encoder == "model" else options.encoder
    groups = [r.group if r.group is not None else i for i, r in enumerate(rows)] if options.grouped else None
    return data([r.text for r in rows], [r.label for r in rows], subject.text, subject.label, encoder=encoder,
                groups=groups, trainer=LogisticTrainer(l2=options.l2, steps=options.steps), classes=options.classes)
