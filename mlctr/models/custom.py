"""A user's own model as a peer: the contract a model class must meet, and ``module:Class``.

The registry (``mlctr.models``) builds every peer through ``create_model``; a class written
outside mlctr enters it in one of two ways:

* ``mlctr.models.register('mynet', MyNet)`` in the process that trains (a launcher script
  or a notebook), then ``config.models.<key>.model = 'mynet'``;
* ``config.models.<key>.model = 'mypackage.mymodule:MyNet'``: the class is imported by its
  module path wherever a run is rebuilt (training, resuming, ``mlctr.predict``, the
  finetune study), so a command line or a saved ``config.json`` needs no launcher. The
  module must be importable (on ``PYTHONPATH``, or in the current directory for
  ``python -m``).

Either way the class must be a ``flax.linen.Module`` with the fields ``vocab_size`` and
``num_fields`` and ``__call__(ids, *, train)`` returning float32 logits [B]; the optional
fields ``dtype``, ``qr_combiner``, ``embedding_regularizer`` and ``net_regularizer`` opt it
into the matching run settings (``create_model`` refuses a setting the class cannot take).
Subclassing ``mlctr.models.base.EmbeddingModel`` gives all of them and the shared
embedding; docs/models.md "Adding a model" has a worked example.
"""

import dataclasses
import functools
import importlib

import flax.linen as nn

# The fields a peer model must have: create_model sets them from the dataset.
REQUIRED_FIELDS = ('vocab_size', 'num_fields')


def init_fields(cls: type) -> list[str]:
    """Names of the constructor fields of a Flax module class, in declaration order."""
    return [f.name for f in dataclasses.fields(cls) if f.init]


def check_model_class(name: str, cls) -> type:
    """``cls`` if it can be a peer; else a one-line ValueError naming ``name``.

    Args:
      name: how the model was named (registry name or ``module:Class``), for the message.
      cls: the candidate class.

    Returns:
      ``cls``.

    Raises:
      ValueError: not a ``flax.linen.Module`` subclass, or a required field missing.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ValueError(f'model {name!r} is {cls!r}, not a flax.linen.Module subclass')
    missing = [f for f in REQUIRED_FIELDS if f not in init_fields(cls)]
    if missing:
        raise ValueError(f'model {name!r} ({cls.__module__}.{cls.__qualname__}) lacks the '
                         f'field(s) {missing} every peer has (vocab_size: table rows, '
                         f'num_fields: F); subclass mlctr.models.base.EmbeddingModel to get them')
    return cls


def import_model_class(spec: str) -> type:
    """The class named by ``spec`` = ``'package.module:Class'`` (``Class`` may be dotted).

    Raises:
      ValueError: one line, when the spec is malformed, the module cannot be imported
        (including an error inside it), it has no such attribute, or the class breaks
        the contract (``check_model_class``).
    """
    module_name, _, qualname = spec.partition(':')
    if not module_name.strip() or not qualname.strip():
        raise ValueError(f'model {spec!r}: expected MODULE:CLASS, e.g. mymodels:MyNet')
    try:
        module = importlib.import_module(module_name.strip())
    except Exception as e:  # a user's module may fail in any way; say how, in one line
        detail = ' '.join(str(e).split())
        raise ValueError(f'model {spec!r}: cannot import module {module_name.strip()!r} '
                         f'({type(e).__name__}: {detail}); is it on PYTHONPATH?') from None
    try:
        cls = functools.reduce(getattr, qualname.strip().split('.'), module)
    except AttributeError:
        raise ValueError(f'model {spec!r}: module {module.__name__!r} '
                         f'({getattr(module, "__file__", "?")}) has no {qualname.strip()!r}'
                         ) from None
    return check_model_class(spec, cls)
