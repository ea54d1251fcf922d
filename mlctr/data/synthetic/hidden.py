"""The hidden click function of the synthetic generator (the true click probabilities).

Over what a model sees after BARS preprocessing (integers through the Criteo bucketing,
a categorical value by its identity): every (field, value) has a weight w and a latent
vector v (dimension LATENT_DIM), and the shared function is

    logit = bias + a_lin * sum_f w_f                          (all fields)
                 + a_fm * sum_{f<g in FM} <v_f, v_g>          (FM_FIELDS fields)
                 + a_deep * MLP(concat_{f in DEEP} v_f)       (DEEP_FIELDS fields,
                                                               one hidden ReLU layer)

The interacting fields are drawn among those with at most INTERACTION_MAX_CARDINALITY
values at full size, so that their values recur often enough to be learnt. A linear
model learns the first-order part and the main effects hidden in the others, not the
interactions; values from the long tail are seen too rarely to learn (or fall below
min_count into OOV), so good models stay below Bayes.

With `diversity` d > 0, four architecture-specific parts (mlctr/data/synthetic/parts.py:
DCN's crosses, IPNN's inner products, FiBiNET's bilinear field weighting, a deeper MLP)
are added, and the variance is shared out so that the logit's total variance stays that
of the shared function: the shared parts' standard deviations are multiplied by
sqrt(1 / (1 + d)), and each of the four parts gets the variance V * d / (1 + d) / 4,
V = sum of the squared shared signals. So d is the ratio of the architecture-specific
variance to the shared variance; d = 0 is the shared function alone, drawn and computed
exactly as without the knob.

The scales a_* are set on a fixed calibration sample so that each part has its target
standard deviation, and the bias so that the mean probability is `positive_rate`.
"""

from __future__ import annotations

import numpy as np

from mlctr.data.synthetic import parts

LATENT_DIM = 4
HIDDEN_UNITS = 16
FM_FIELDS = 12        # fields in the pairwise (FM) part
DEEP_FIELDS = 6       # fields the MLP part reads
INTERACTION_MAX_CARDINALITY = 20_000
SHARED_PARTS = ("linear", "fm", "deep")


def sigmoid(x: np.ndarray) -> np.ndarray:
    """float32 logistic function."""
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def target_stds(signal: dict[str, float], diversity: float) -> np.ndarray:
    """float32 standard deviations of the logit's parts (shared, then specific)."""
    shared = np.array([signal[k] for k in SHARED_PARTS], np.float32)
    if not diversity:
        return shared
    total = float(np.sum(shared.astype(np.float64) ** 2))
    specific = np.full(len(parts.PART_NAMES),
                       np.sqrt(total * diversity / (1.0 + diversity) / 4.0))
    return np.concatenate([shared * np.sqrt(1.0 / (1.0 + diversity)), specific]
                          ).astype(np.float32)


def _bias_for_rate(logits: np.ndarray, positive_rate: float) -> np.float32:
    """The bias for the target positive rate: Newton steps on the (increasing) mean
    probability, kept inside a bisection bracket."""
    low, high, bias = -20.0, 20.0, 0.0
    for _ in range(60):
        probs = sigmoid(logits + bias).astype(np.float64)
        error = probs.mean() - positive_rate
        if error < 0:
            low = bias
        else:
            high = bias
        if abs(error) < 1e-9 or high - low < 1e-9:
            break
        bias -= error / max((probs * (1.0 - probs)).mean(), 1e-12)
        if not low < bias < high:
            bias = 0.5 * (low + high)
    return np.float32(bias)


class HiddenFunction:
    """The known click model: parameters of every (field, value id).

    Args:
        fields, offsets: the fields (synthetic_marginals.Field) and their first global ids.
        rng: the generator's parameter stream (the shared parts' draws, in order).
        diversity: weight of the architecture-specific parts (see the module docstring).
        parts_rng: the specific parts' own stream (used when diversity > 0).
    """

    def __init__(self, fields, offsets: np.ndarray, rng: np.random.Generator,
                 diversity: float = 0.0, parts_rng: np.random.Generator | None = None):
        self.fields, self.offsets = fields, offsets
        sizes = np.array([f.num_ids for f in fields])
        total = int(sizes.sum())
        importance = np.repeat(rng.uniform(0.2, 1.0, len(fields)), sizes).astype(np.float32)
        # Per (field, value id): a weight and a latent vector.
        params = rng.standard_normal((total, 1 + LATENT_DIM), np.float32) * importance[:, None]
        self.weights = np.ascontiguousarray(params[:, 0])
        self.latents = np.ascontiguousarray(params[:, 1:]) / np.float32(np.sqrt(LATENT_DIM))
        # The interactions involve a few fields each, drawn among those with at most
        # INTERACTION_MAX_CARDINALITY values at full size (and the integer / time
        # fields): enough data per value to learn them, as in real CTR data, where
        # interactions of frequent features carry most of the learnable signal.
        pool = [i for i, f in enumerate(fields)
                if f.full_cardinality <= INTERACTION_MAX_CARDINALITY]
        self.fm_fields = np.sort(rng.choice(pool, FM_FIELDS, replace=False))
        self.deep_fields = np.sort(rng.choice(pool, DEEP_FIELDS, replace=False))
        width = DEEP_FIELDS * LATENT_DIM
        self.hidden_w = rng.standard_normal((width, HIDDEN_UNITS), np.float32) / np.sqrt(width)
        self.hidden_b = (0.5 * rng.standard_normal(HIDDEN_UNITS)).astype(np.float32)
        self.out_w = rng.standard_normal(HIDDEN_UNITS).astype(np.float32)
        self.diversity = float(diversity)
        self.specific = (parts.ArchitectureParts(fields, offsets, parts_rng)
                         if self.diversity else None)
        self.part_names = SHARED_PARTS + (parts.PART_NAMES if self.specific else ())
        self.scales = np.ones(len(self.part_names), np.float32)
        self.bias = np.float32(0.0)

    def parts(self, ids: np.ndarray) -> np.ndarray:
        """float32 [P, n]: the unscaled parts of the logit (`part_names` order)."""
        n = len(ids)
        linear = np.take(self.weights, ids).sum(axis=1)
        latents = np.take(self.latents, ids[:, self.fm_fields], axis=0)  # [n, f, k]
        latent_sum = latents.sum(axis=1)
        fm = 0.5 * (np.einsum("nk,nk->n", latent_sum, latent_sum)
                    - np.einsum("nfk,nfk->n", latents, latents))
        deep_in = np.take(self.latents, ids[:, self.deep_fields], axis=0).reshape(n, -1)
        hidden = np.maximum(deep_in @ self.hidden_w + self.hidden_b, 0.0)
        shared = np.stack([linear, fm, hidden @ self.out_w])
        if self.specific is None:
            return shared
        return np.concatenate([shared, self.specific(np.ascontiguousarray(ids.T))])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """float32 [n] true logits of rows with global value ids [n, F]."""
        return self.bias + self.scales @ self.parts(ids)

    def calibrate(self, ids: np.ndarray, stds: np.ndarray, positive_rate: float) -> None:
        """Sets the scales (part stds `stds` on rows `ids`) and the bias (mean rate)."""
        parts = self.parts(ids)
        self.scales = (stds / np.maximum(parts.std(axis=1), 1e-6)).astype(np.float32)
        self.bias = _bias_for_rate(self.scales @ parts, positive_rate)
        self._regroup()

    def _regroup(self) -> None:
        # The same function, regrouped for speed: the linear part and the FM part's
        # squared norms are one scalar per value id, the latents 16-byte items, and the
        # MLP's first layer is a sum of per-(field, value) projections (no BLAS call,
        # whose threads would fight the generator's).
        unary = self.scales[0] * self.weights
        for f in self.fm_fields:
            start, stop = self.offsets[f], self.offsets[f] + self.fields[f].num_ids
            unary[start:stop] -= 0.5 * self.scales[1] * np.einsum(
                "nk,nk->n", self.latents[start:stop], self.latents[start:stop])
        self._unary = unary.astype(np.float32)
        self._latent_items = np.ascontiguousarray(self.latents).view(np.complex128).reshape(-1)
        self._fm_scale = np.float32(0.5 * self.scales[1])
        projections, shifts, base = [], [], 0
        for j, f in enumerate(self.deep_fields):
            start, stop = self.offsets[f], self.offsets[f] + self.fields[f].num_ids
            w = self.hidden_w[j * LATENT_DIM:(j + 1) * LATENT_DIM]
            projections.append(np.einsum("nk,kh->nh", self.latents[start:stop], w))
            shifts.append(base - start)
            base += stop - start
        self._deep_projection = np.concatenate(projections).astype(np.float32)
        self._deep_shift = np.array(shifts, np.int64)[:, None]
        self._out_w = (self.scales[2] * self.out_w).astype(np.float32)

    def fast_logits(self, columns: np.ndarray) -> np.ndarray:
        """`logits` of rows with global ids [F, n], regrouped for speed (equal up to
        float32 rounding)."""
        logits = self._unary.take(columns).sum(axis=0)
        fm = self._latent_items.take(columns[self.fm_fields]).view(np.float32).reshape(
            FM_FIELDS, -1, LATENT_DIM).sum(axis=0)
        logits += self._fm_scale * np.einsum("nk,nk->n", fm, fm)
        hidden = self._deep_projection.take(columns[self.deep_fields] + self._deep_shift,
                                            axis=0).sum(axis=0)
        hidden += self.hidden_b
        np.maximum(hidden, 0, out=hidden)
        logits += np.einsum("nh,h->n", hidden, self._out_w)
        if self.specific is not None:
            logits += self.scales[len(SHARED_PARTS):] @ self.specific(columns)
        logits += self.bias
        return logits
