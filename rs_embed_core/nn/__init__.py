"""A small torch toolkit the ViT model plugins share (torch-only; imported by plugins, never by the core).

Parameter names follow open_clip's checkpoints (`ln_1`, `attn.in_proj_weight`, `mlp.c_fc`...), so a
model built from these parts loads an open_clip-format state dict strictly, key for key.
"""

from .cyclic import latlon_code, week_hour_code
from .alibi import alibi_bias_2d, alibi_slopes
from .flexi import BandGroupPatchEmbed, FlexiPatchEmbed, pi_resize_kernel, resize_matrix
from .fourier import fourier_features, in_fourier_range
from .geo_time import days_of_year, frame_dates, lonlat_to_xyz, month_table, months_of
from .hypernet import KernelGenerator, PostNormEncoderLayer, ResidualMlp, generated_kernel
from .irpe import ContextualRPE, irpe_bucket_count, irpe_buckets
from .layer_scale import LayerScale, LayerScaleBlock
from .ltae import LTAE, date_code
from .patch_embed import PatchEmbed
from .patch_embed_3d import PatchEmbed3D
from .pos_embed import sincos_1d, sincos_2d, sincos_2d_gsd, sincos_3d
from .timm_block import TimmAttention, TimmBlock, TimmMlp
from .tokens import grid_to_tokens, patch_missing, pool_tokens, prepend_tokens, split_prefix, tokens_to_grid
from .transformer import ACTIVATIONS, Attention, Block, Mlp, QuickGELU, Transformer, activation
from .windows import relative_position_index, shifted_window_mask, window_partition, window_reverse
from .vitpytorch import VitPytorchAttention, VitPytorchFeedForward, VitPytorchTransformer

__all__ = [
    "ACTIVATIONS",
    "Attention",
    "BandGroupPatchEmbed",
    "ContextualRPE",
    "Block",
    "FlexiPatchEmbed",
    "KernelGenerator",
    "LTAE",
    "LayerScale",
    "LayerScaleBlock",
    "Mlp",
    "PatchEmbed",
    "PatchEmbed3D",
    "PostNormEncoderLayer",
    "QuickGELU",
    "ResidualMlp",
    "TimmAttention",
    "TimmBlock",
    "TimmMlp",
    "Transformer",
    "VitPytorchAttention",
    "VitPytorchFeedForward",
    "VitPytorchTransformer",
    "activation",
    "alibi_bias_2d",
    "alibi_slopes",
    "date_code",
    "days_of_year",
    "fourier_features",
    "frame_dates",
    "generated_kernel",
    "grid_to_tokens",
    "in_fourier_range",
    "irpe_bucket_count",
    "irpe_buckets",
    "lonlat_to_xyz",
    "month_table",
    "months_of",
    "patch_missing",
    "latlon_code",
    "pool_tokens",
    "prepend_tokens",
    "pi_resize_kernel",
    "pool_tokens",
    "prepend_tokens",
    "resize_matrix",
    "sincos_1d",
    "sincos_2d",
    "sincos_2d_gsd",
    "sincos_3d",
    "split_prefix",
    "tokens_to_grid",
    "week_hour_code",
    "relative_position_index",
    "shifted_window_mask",
    "window_partition",
    "window_reverse",
]
