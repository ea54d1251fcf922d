"""Architecture-specific parts of the synthetic click function (the `diversity` knob).

Each part is a function of the value ids of a few fields, drawn among the fields with
at most PART_MAX_CARDINALITY values at full size (the integer fields and the small
categorical ones), whose values recur often enough to be learnt from a few ten thousand
rows, with its own per-value parameters, and shaped like what one of the paper's peers
computes:

* `cross` (DCN): a bounded-degree explicit cross, the sum of CROSS_TERMS products of
  CROSS_DEGREE linear forms of the fields' values: exactly what a DCN cross network of
  CROSS_DEGREE - 1 layers represents, a polynomial the other peers' ReLU networks only
  approximate.
* `inner` (IPNN): an MLP over the pairwise inner products of latent vectors, what the
  inner-product layer of PNN feeds its DNN.
* `bilinear` (FiBiNET): SENET-style field weights (squeeze by mean, excitation by a
  two-layer net) rescale the latent vectors, then a field-pair bilinear form
  v_f^T W_fg v_g, FiBiNET's "field_interaction" bilinear layer.
* `deep` (DeepFM's DNN): a deeper ReLU MLP over the concatenated latent vectors.

Their parameters come from a random stream of their own, so that at diversity 0 (no
parts) the generator's draws, and its output, are those of the shared function alone.
"""

from __future__ import annotations

import numpy as np

PART_NAMES = ("cross", "inner", "bilinear", "deep")
LATENT_DIM = 4
PART_MAX_CARDINALITY = 1000
CROSS_FIELDS, CROSS_TERMS, CROSS_DEGREE = 6, 2, 3
INNER_FIELDS, INNER_HIDDEN = 6, 16
BILINEAR_FIELDS, SENET_HIDDEN = 6, 3
DEEP_FIELDS, DEEP_HIDDEN = 6, (32, 32)


class _Lookup:
    """Per-value parameters of a few fields, looked up from global value ids.

    Args:
        fields, offsets: the generator's fields and their first global ids.
        chosen: indices of the fields the part reads.
        width: parameters per value.
        rng: the parts' random stream.
        std: standard deviation of the parameters.
    """

    def __init__(self, fields, offsets, chosen, width: int, rng: np.random.Generator,
                 std: float):
        sizes = np.array([fields[f].num_ids for f in chosen])
        self.chosen = np.asarray(chosen)
        self.table = (rng.standard_normal((int(sizes.sum()), width)) * std).astype(np.float32)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.shift = (starts - offsets[self.chosen]).astype(np.int64)[:, None]

    def __call__(self, columns: np.ndarray) -> np.ndarray:
        """float32 [fields, n, width] parameters of rows with global ids [F, n]."""
        return self.table.take(columns[self.chosen] + self.shift, axis=0)


def _dense(rng: np.random.Generator, fan_in: int, fan_out: int) -> tuple[np.ndarray, np.ndarray]:
    """He-scaled weights [fan_in, fan_out] and biases of one ReLU layer."""
    w = rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)
    b = 0.5 * rng.standard_normal(fan_out)
    return w.astype(np.float32), b.astype(np.float32)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0, out=x)


def _pairs(count: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(count, k=1)


class ArchitectureParts:
    """The four architecture-specific parts (unscaled), see the module docstring.

    Args:
        fields, offsets: the generator's fields and their first global ids.
        rng: a random stream of the parts' own.
    """

    def __init__(self, fields, offsets, rng: np.random.Generator):
        pool = [i for i, f in enumerate(fields) if f.full_cardinality <= PART_MAX_CARDINALITY]

        def lookup(count, width, std):
            chosen = np.sort(rng.choice(pool, count, replace=False))
            return _Lookup(fields, offsets, chosen, width, rng, std)

        # cross: linear forms of unit variance (each the sum of CROSS_FIELDS values).
        self._cross = lookup(CROSS_FIELDS, CROSS_TERMS * CROSS_DEGREE, CROSS_FIELDS ** -0.5)
        self._inner = lookup(INNER_FIELDS, LATENT_DIM, LATENT_DIM ** -0.5)
        num_pairs = INNER_FIELDS * (INNER_FIELDS - 1) // 2
        self._inner_layer = _dense(rng, num_pairs, INNER_HIDDEN)
        self._inner_out = rng.standard_normal(INNER_HIDDEN).astype(np.float32)
        self._bilinear = lookup(BILINEAR_FIELDS, LATENT_DIM, LATENT_DIM ** -0.5)
        self._senet = (_dense(rng, BILINEAR_FIELDS, SENET_HIDDEN)[0],
                       rng.standard_normal((SENET_HIDDEN, BILINEAR_FIELDS)).astype(np.float32))
        num_pairs = BILINEAR_FIELDS * (BILINEAR_FIELDS - 1) // 2
        self._bilinear_w = (rng.standard_normal((num_pairs, LATENT_DIM, LATENT_DIM))
                            / LATENT_DIM ** 0.5).astype(np.float32)
        self._deep = lookup(DEEP_FIELDS, LATENT_DIM, LATENT_DIM ** -0.5)
        widths = (DEEP_FIELDS * LATENT_DIM,) + DEEP_HIDDEN
        self._deep_layers = [_dense(rng, a, b) for a, b in zip(widths[:-1], widths[1:])]
        self._deep_out = rng.standard_normal(widths[-1]).astype(np.float32)
        self.fields = {name: getattr(self, "_" + name).chosen.tolist() for name in PART_NAMES}

    def cross(self, columns: np.ndarray) -> np.ndarray:
        """float32 [n]: sum over terms of the product of CROSS_DEGREE linear forms."""
        forms = self._cross(columns).sum(axis=0)  # [n, terms * degree]
        forms = forms.reshape(-1, CROSS_TERMS, CROSS_DEGREE)
        return forms.prod(axis=2).sum(axis=1)

    def inner(self, columns: np.ndarray) -> np.ndarray:
        """float32 [n]: an MLP over the pairwise inner products of latent vectors."""
        latents = self._inner(columns)  # [f, n, k]
        first, second = _pairs(INNER_FIELDS)
        products = np.einsum("pnk,pnk->np", latents[first], latents[second])
        w, b = self._inner_layer
        return _relu(products @ w + b) @ self._inner_out

    def bilinear(self, columns: np.ndarray) -> np.ndarray:
        """float32 [n]: SENET-reweighted latent vectors in field-pair bilinear forms."""
        latents = self._bilinear(columns)  # [f, n, k]
        squeezed = latents.mean(axis=2).T  # [n, f]
        w1, w2 = self._senet
        weights = 2.0 / (1.0 + np.exp(-(_relu(squeezed @ w1) @ w2)))  # in (0, 2)
        latents = latents * weights.T[:, :, None].astype(np.float32)
        first, second = _pairs(BILINEAR_FIELDS)
        projected = np.einsum("pnk,pkl->pnl", latents[first], self._bilinear_w)
        return np.einsum("pnl,pnl->n", projected, latents[second])

    def deep(self, columns: np.ndarray) -> np.ndarray:
        """float32 [n]: a ReLU MLP of len(DEEP_HIDDEN) layers over the latent vectors."""
        latents = self._deep(columns)  # [f, n, k]
        x = latents.transpose(1, 0, 2).reshape(latents.shape[1], -1)
        for w, b in self._deep_layers:
            x = _relu(x @ w + b)
        return x @ self._deep_out

    def __call__(self, columns: np.ndarray) -> np.ndarray:
        """float32 [4, n]: the parts (in PART_NAMES order) of rows with global ids [F, n]."""
        return np.stack([getattr(self, name)(columns) for name in PART_NAMES]).astype(
            np.float32)
