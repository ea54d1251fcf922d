"""Model zoo and registry: peers are named by string, e.g. ``peers = "deepfm,dcn,ipnn,fibinet"``.

Every model is a ``flax.linen.Module`` built on the bases in ``base.py``: fields
``vocab_size``, ``num_fields``, BARS/FuxiCTR-named hyperparameters and ``dtype`` (compute
dtype; params stay float32).
``model.apply(variables, ids, train=...)`` takes int32 global ids [B, F] and returns float32
logits [B]; with ``qr_combiner`` set it takes quotient-remainder table rows [B, 2F] instead
(``mlctr.models.qr``, ``base.CTRModel``).

A user's own model joins with ``register(name, cls)`` or is named ``'module:Class'`` where a
registry name goes (``mlctr/models/custom.py``; docs/models.md "Adding a model").
"""

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from mlctr.models import custom
from mlctr.models import qr
from mlctr.models.autoint import AutoInt
from mlctr.models.dcn import DCN
from mlctr.models.dcnv2 import DCNv2
from mlctr.models.dcnv3 import DCNv3
from mlctr.models.deepfm import DeepFM
from mlctr.models.eulernet import EulerNet
from mlctr.models.fibinet import FiBiNET
from mlctr.models.finalmlp import FinalMLP
from mlctr.models.finalnet import FinalNet
from mlctr.models.fm import FM
from mlctr.models.gdcn import GDCN
from mlctr.models.lr import LR
from mlctr.models.masknet import MaskNet
from mlctr.models.onn import ONN
from mlctr.models.pnn import IPNN, OPNN, PNN
from mlctr.models.wide_deep import WideDeep
from mlctr.models.xdeepfm import xDeepFM

MODELS: dict[str, type] = {
    'lr': LR,
    'fm': FM,
    'deepfm': DeepFM,
    'dcn': DCN,
    'dcnv2': DCNv2,
    'pnn': PNN,
    'ipnn': IPNN,  # PNN with product_type='inner' (the default).
    'opnn': OPNN,  # PNN with product_type='outer'.
    'fibinet': FiBiNET,
    'wide_deep': WideDeep,
    'xdeepfm': xDeepFM,
    'autoint': AutoInt,
    'dcnv3': DCNv3,  # Tri-BCE through models.auxiliary.
    'finalmlp': FinalMLP,
    'finalnet': FinalNet,  # block_type '2B' (two blocks) or '1B'.
    'gdcn': GDCN,  # model_structure 'parallel' (GDCN-P) or 'stacked' (GDCN-S).
    'masknet': MaskNet,  # serial or parallel: model_type
    'onn': ONN,
    'eulernet': EulerNet,
}

# Fields every model has that are not hyperparameters.
_STRUCTURAL_FIELDS = ('vocab_size', 'num_fields', 'qr_combiner', 'parent', 'name')


def register(name: str, cls: type) -> None:
    """Adds a user's model class to ``MODELS`` under ``name`` (lower-cased), so that
    ``config.models.<key>.model = name`` builds it like a built-in model.

    Registering is per process: a run resumed, scored (``mlctr.predict``) or studied in
    another process needs the same call first; naming the class ``'module:Class'`` in the
    config instead needs none.

    Args:
      name: registry name: no ``':'`` (that marks ``module:Class``), not a built-in's.
      cls: a ``flax.linen.Module`` subclass with ``vocab_size`` and ``num_fields`` fields
        (``mlctr/models/custom.py``).

    Raises:
      ValueError: a bad name, a name taken by another class, or a class that cannot be a peer.
    """
    if not isinstance(name, str) or not name.strip() or ':' in name:
        raise ValueError(f'model name must be a non-empty string without ":", got {name!r}')
    key = name.strip().lower()
    custom.check_model_class(key, cls)
    if MODELS.get(key, cls) is not cls:
        taken = MODELS[key]
        raise ValueError(f'model name {key!r} is taken by {taken.__module__}.'
                         f'{taken.__qualname__}; register {cls.__qualname__} under another name')
    MODELS[key] = cls


def model_class(name: str) -> type:
    """The class of registry name ``name`` or of ``'module:Class'`` (imported).

    Raises:
      ValueError: one line, for an unknown name or a class that cannot be imported.
    """
    if ':' in str(name):
        return custom.import_model_class(str(name))
    try:
        return MODELS[str(name).lower()]
    except KeyError:
        raise ValueError(f'Unknown model {name!r}; known models: {sorted(MODELS)} '
                         f'(or MODULE:CLASS for a model of your own)') from None


def model_hparam_names(name: str) -> list[str]:
    """Hyperparameter names accepted by model ``name`` (all but vocab_size, num_fields and
    qr_combiner)."""
    return [f for f in custom.init_fields(model_class(name)) if f not in _STRUCTURAL_FIELDS]


def create_model(name: str, *, vocab_size: int, num_fields: int, qr_combiner: str = '',
                 **hparams: Any) -> nn.Module:
    """Builds a registered model, rejecting unknown hyperparameters.

    Args:
      name: registry name (``deepfm``, ``dcn``, ``pnn``/``ipnn``/``opnn``, ...).
      vocab_size: rows of the concatenated embedding table (all fields).
      num_fields: number of feature fields F.
      qr_combiner: '' or, for quotient-remainder table rows [B, 2F] as ids, how each
        field's two embeddings combine ('product' or 'sum'; ``mlctr.models.qr``).
      **hparams: hyperparameters with BARS/FuxiCTR names; lists become tuples.

    Returns:
      The unbound module.

    Raises:
      ValueError: unknown model name or unknown hyperparameter(s).
    """
    cls = model_class(name)
    if qr_combiner and qr_combiner not in qr.COMBINERS:
        raise ValueError(f'unknown qr combiner {qr_combiner!r}; expected one of {qr.COMBINERS}')
    hparams, run_fields = _run_fields(name, cls, dict(hparams), qr_combiner)
    valid = model_hparam_names(name)
    unknown = sorted(set(hparams) - set(valid))
    if unknown:
        raise ValueError(f'Unknown hyperparameter(s) {unknown} for model {name!r}; '
                         f'valid: {valid}')
    fixed_product = {'ipnn': 'inner', 'opnn': 'outer'}.get(name.lower())
    if fixed_product and hparams.get('product_type', fixed_product) != fixed_product:
        raise ValueError(f'Model {name!r} fixes product_type={fixed_product!r}; '
                         f'use "pnn" to choose product_type={hparams["product_type"]!r}')
    hparams = {k: tuple(v) if isinstance(v, list) else v for k, v in hparams.items()}
    return cls(vocab_size=vocab_size, num_fields=num_fields, **run_fields, **hparams)


def _run_fields(name: str, cls: type, hparams: dict[str, Any], qr_combiner: str
                ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(``hparams``, ``{'qr_combiner': ...}``), less the run settings a class without the
    field can do without (float32 compute, no QR); a setting it cannot do without is an
    error. Every built-in model has both fields: this only matters for a user's model."""
    fields = custom.init_fields(cls)
    run_fields = {}
    if 'qr_combiner' in fields:
        run_fields['qr_combiner'] = qr_combiner
    elif qr_combiner:
        raise ValueError(f'model {name!r} has no qr_combiner field, so it cannot take '
                         f'quotient-remainder table rows (config.vocab.qr_collisions)')
    if 'dtype' in hparams and 'dtype' not in fields:
        if jnp.dtype(hparams['dtype']) != jnp.float32:
            raise ValueError(f'model {name!r} has no dtype field, so it cannot compute in '
                             f'{jnp.dtype(hparams["dtype"]).name} (config.compute_dtype)')
        del hparams['dtype']
    return hparams, run_fields
