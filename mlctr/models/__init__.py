"""Model zoo and registry: peers are named by string, e.g. ``peers = "deepfm,dcn,ipnn,fibinet"``.

Every model is a ``flax.linen.Module`` built on the bases in ``base.py``: fields
``vocab_size``, ``num_fields``, BARS/FuxiCTR-named hyperparameters and ``dtype`` (compute
dtype; params stay float32).
``model.apply(variables, ids, train=...)`` takes int32 global ids [B, F] and returns float32
logits [B]; with ``qr_combiner`` set it takes quotient-remainder table rows [B, 2F] instead
(``mlctr.models.qr``, ``base.CTRModel``).
"""

import dataclasses
from typing import Any

import flax.linen as nn

from mlctr.models import qr
from mlctr.models.autoint import AutoInt
from mlctr.models.dcn import DCN
from mlctr.models.dcnv2 import DCNv2
from mlctr.models.dcnv3 import DCNv3
from mlctr.models.deepfm import DeepFM
from mlctr.models.fibinet import FiBiNET
from mlctr.models.finalmlp import FinalMLP
from mlctr.models.finalnet import FinalNet
from mlctr.models.fm import FM
from mlctr.models.gdcn import GDCN
from mlctr.models.lr import LR
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
}

# Fields every model has that are not hyperparameters.
_STRUCTURAL_FIELDS = ('vocab_size', 'num_fields', 'qr_combiner', 'parent', 'name')


def _model_class(name: str) -> type:
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ValueError(f'Unknown model {name!r}; known models: {sorted(MODELS)}') from None


def model_hparam_names(name: str) -> list[str]:
    """Hyperparameter names accepted by model ``name`` (all but vocab_size, num_fields and
    qr_combiner)."""
    return [f.name for f in dataclasses.fields(_model_class(name))
            if f.init and f.name not in _STRUCTURAL_FIELDS]


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
    cls = _model_class(name)
    if qr_combiner and qr_combiner not in qr.COMBINERS:
        raise ValueError(f'unknown qr combiner {qr_combiner!r}; expected one of {qr.COMBINERS}')
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
    return cls(vocab_size=vocab_size, num_fields=num_fields, qr_combiner=qr_combiner, **hparams)
