"""Shared CTR building blocks; each is tested against a numpy reference in tests/models."""

from mlctr.models.layers.attention import MultiHeadSelfAttention
from mlctr.models.layers.bilinear import BilinearInteraction
from mlctr.models.layers.cin import CompressedInteractionNet
from mlctr.models.layers.cross import (CrossNet, CrossNetMix, CrossNetV2, GatedCrossNet,
                                       SelfMaskCrossNet)
from mlctr.models.layers.embedding import FeatureEmbedding, LinearTerm, field_offsets
from mlctr.models.layers.final import (FactorizedInteraction, FeatureSelectionGate, FieldGate,
                                       FinalBlock, InteractionAggregation)
from mlctr.models.layers.fm import FMInteraction, fm_product_sum
from mlctr.models.layers.mlp import Linear, MLPBlock
from mlctr.models.layers.product import InnerProduct, OuterProduct, inner_product
from mlctr.models.layers.senet import SqueezeExcitation
