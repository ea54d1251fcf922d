"""The new models at their published settings have exactly the parameter count the published
runs logged ("Total number of parameters" in the BARS and DCNv3-author logs): a check of the
architecture as a whole, layer widths, heads and biases included, against FuxiCTR's.

The vocabularies are the runs' feature specs (FuxiCTR's per-field vocab_size, padding and OOV
rows included); FuxiCTR's tables are one per field of those sizes, ours one table of their
sum: the same parameters.
"""

import jax
import jax.numpy as jnp
import pytest

from mlctr.configs.bars_table import bars_hparams
from mlctr.models import create_model

# Per-field vocab_size of the logs' feature specs, in the logs' (alphabetical) order.
CRITEO_X4_001 = (1446, 39530, 5131, 156656, 3176, 28, 11043, 148913, 12, 4560, 2003, 554, 5,
                 154564, 18, 17, 53031, 82, 40955, 157339, 117822, 306, 18, 11882, 630, 5, 44,
                 6, 27, 37, 72, 99, 122, 41, 220, 112, 80, 69, 92)
AVAZU_X4_001 = (9, 2556, 10, 11, 434, 6, 70, 173, 62, 33, 400, 6545, 9, 6, 820509, 2903322,
                7259, 7, 26, 27, 5461, 4051, 9, 4)

PUBLISHED = [  # (model, dataset, logged total, log)
    ('finalmlp', 'criteo_x4_001', 19524954, 'BARS FinalMLP_criteo_x4_001_002_53a37ddd'),
    ('finalnet', 'criteo_x4_001', 18153050, 'BARS FinalNet_criteo_x4_001_041_449ccb21'),
    ('dcnv3', 'criteo_x4_001', 16336626, 'salmon1802/DCNv3 DCNv3_Criteo_047_43d9ad18'),
    ('finalmlp', 'avazu_x4_001', 69046986, 'BARS FinalMLP_avazu_x4_001_006_a7c95fe1'),
    ('finalnet', 'avazu_x4_001', 69766586, 'BARS FinalNet_avazu_x4_001_015_4b405413'),
    ('dcnv3', 'avazu_x4_001', 240735242, 'salmon1802/DCNv3 SDCNv3_Avazu'),
]


@pytest.mark.parametrize('name,dataset,total,log', PUBLISHED)
def test_parameter_count_equals_the_published_run(name, dataset, total, log):
    vocab = CRITEO_X4_001 if dataset == 'criteo_x4_001' else AVAZU_X4_001
    model = create_model(name, vocab_size=sum(vocab), num_fields=len(vocab),
                         **bars_hparams(name, dataset))
    shapes = jax.eval_shape(lambda: model.init(
        jax.random.key(0), jnp.zeros((2, len(vocab)), jnp.int32), train=False))
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes['params'])) == total, log
