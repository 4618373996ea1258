"""Building blocks in plain torch: radial bases, Fourier features, MLPs, scatter ops, pooling, transformers."""

from encoders.layers.basis import BesselRBF, FourierFeatures, GaussianRBF, cosine_cutoff
from encoders.layers.mlp import MLP
from encoders.layers.pooling import AttentionPool, TokenPool, masked_mean
from encoders.layers.scatter import exclusive_cumsum, scatter_mean, scatter_sum, to_padded
from encoders.layers.transformer import PatchTransformer, TransformerStack, resample_positions

__all__ = [
    "MLP",
    "AttentionPool",
    "BesselRBF",
    "FourierFeatures",
    "GaussianRBF",
    "PatchTransformer",
    "TokenPool",
    "TransformerStack",
    "cosine_cutoff",
    "exclusive_cumsum",
    "masked_mean",
    "resample_positions",
    "scatter_mean",
    "scatter_sum",
    "to_padded",
]
