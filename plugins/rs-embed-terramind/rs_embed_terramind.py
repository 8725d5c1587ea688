"""TerraMind 1.0 (IBM, ESA Φ-lab, Jülich; Jakubik et al. 2025, arXiv:2504.11171) for rs-embed.

TerraMind is an any-to-any multimodal model; this plugin runs its encoder on one modality, raw
Sentinel-2 L2A (12 bands), the "S2L2A" path of terratorch's TerraMind backbone: a per-modality
pixel patch embedding, the shared ViT encoder and its final norm. Rebuilt in torch from
`rs_embed_core.nn` with the checkpoints' parameter names (terratorch 1.2.11 is the test-time
reference, never a run-time dependency).

- `TerraMind` (model id "terramind"): one median composite, standardised with the published
  per-band mean/std, 224 x 224; pooled = mean of the tokens; grid = the last layer's tokens
  (D x 14 x 14), georeferenced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError
from rs_embed_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import torch

    from rs_embed_terramind_model import TerraMindS2

__all__ = ["TerraMind", "register_embedders"]

# TerraMind's S2L2A band order (COASTAL_AEROSOL .. SWIR_2, no B10) in Sentinel-2 names.
S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B11", "B12")
# Pre-training statistics of S2 L2A DN (reflectance x 10000) for TerraMind v1:
# terratorch 1.2.11 terramind_register.py v1_pretraining_mean / v1_pretraining_std["untok_sen2l2a@224"]
# (checked by test against the installed package).
MEAN = (1390.458, 1503.317, 1718.197, 1853.91, 2199.1, 2779.975, 2987.011, 3083.234, 3132.22, 3162.988,
        2424.884, 1857.648)
STD = (2106.761, 2141.107, 2038.973, 2134.138, 2085.321, 1889.926, 1820.257, 1871.918, 1753.829, 1797.379,
       1434.261, 1334.311)
IMG_SIZE = 224


def _config(dim: int, depth: int, heads: int, small: bool) -> dict[str, Any]:
    # terratorch 1.2.11 terramind_v1_small / _base / _large: the small model has biases and a GELU
    # MLP; base and large are bias-free with a SwiGLU (SiLU-gated) MLP. All: LayerNorm eps 1e-6, no bias.
    return {"dim": dim, "depth": depth, "heads": heads, "mlp_ratio": 4.0, "patch_size": 16, "img_size": IMG_SIZE,
            "in_chans": 12, "bias": small, "act": "gelu" if small else "silu", "gated_mlp": not small}


_LICENSE = "apache-2.0"

# Pins: commits of the ibm-esa-geospatial repositories and the files' sha256 as independent users
# of these exact files recorded them (the small one with its size, 504,231,662 bytes, and a
# verified download); not recomputed here (no Hub access). A mismatch fails loudly on load.
VARIANTS = (
    Variant("small", pooled_dim=384, grid_dim=384,
            weights=WeightsSpec("ibm-esa-geospatial/TerraMind-1.0-small", "960f7549bfe9d7a08946860042f83badd604c779",
                                "TerraMind_v1_small.pt",
                                "755e9cce9483fd61334ef66c79f805406db5151a8b44a685c8fbbe023c684701", _LICENSE),
            params=_config(384, 12, 6, small=True)),
    Variant("base", pooled_dim=768, grid_dim=768,
            weights=WeightsSpec("ibm-esa-geospatial/TerraMind-1.0-base", "fb96c70d0a5f68dcc44030b89cbfd8ec3fb0c67a",
                                "TerraMind_v1_base.pt",
                                "83c3a0938067c83867a46e564443c2fa38383bf4f966d931b11cb025b847d7ec", _LICENSE),
            params=_config(768, 12, 12, small=False)),
)
# TerraMind-1.0-large (terratorch: dim 1024, 24 blocks, 16 heads, base's layout) is not declared:
# no published digest of TerraMind_v1_large.pt could be found.

NOTES = """\
Input: Sentinel-2 L2A, 12 bands B1..B12 without B10 (TerraMind's S2L2A order), 10 m, one median \
composite, resized (bilinear) to 224 x 224 and standardised (DN - mean) / std with TerraMind v1's \
published pre-training statistics on reflectance x 10000 (terratorch's v1_pretraining_mean/std; v0.1 \
models used other statistics). TerraMind was pre-trained on 264 x 264 px (10 m) TerraMesh chips \
cropped to 224; a resized ROI has another effective GSD unless it is 2240 m wide. Invalid pixels \
(clouds, nodata) are set to the band mean (0 after standardisation).
Encoder path: the S2 L2A pixel embedding + shared encoder + final norm only (no tokenizer, no other \
modality, no decoder); other modalities' embeddings and the decoder are dropped from the checkpoint \
by name, and the bias-free LayerNorms' zero bias buffers are checked to be zero and dropped.
Outputs: grid = last-layer tokens after the final norm (D x 14 x 14); pooled = their mean \
(terratorch's merge_method="mean" over one modality is the identity).
Weights: sha256 values as recorded by independent users of the pinned files; not recomputed here \
(no Hub access). The large variant is not declared (no published digest found)."""


class TerraMind(Embedder):
    card = ModelCard(
        id="terramind",
        description=(
            "TerraMind 1.0 (IBM/ESA): any-to-any multimodal EO foundation model; its Sentinel-2 L2A "
            "encoder path (12 bands, 10 m) gives token and pooled embeddings."
        ),
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", S2_BANDS, 10.0, image_size=IMG_SIZE, frames=1,
                        composite="median"),
        variants=VARIANTS,
        default_variant="small",
        preprocessing=(
            Step("select_bands", {"bands": list(S2_BANDS)}),
            Step("normalize", {"mean": list(MEAN), "std": list(STD)}),
            Step("fill_invalid", {"value": 0.0}),
            Step("resize", {"size": IMG_SIZE, "method": "bilinear", "antialias": True}),
        ),
        pooled="mean of the last-layer tokens (after the encoder's final norm)",
        grid="last-layer tokens after the final norm (D x 14 x 14)",
        license="code: Apache-2.0 (rs-embed); weights: Apache-2.0",
        citation=(
            "Jakubik, J., Yang, F., Blumenstiel, B., et al. TerraMind: Large-Scale Generative Multimodality "
            "for Earth Observation. ICCV 2025. arXiv:2504.11171"
        ),
        homepage="https://ibm.github.io/terramind/",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.net: TerraMindS2 | None = None

    def load(self) -> None:
        from rs_embed_terramind_model import build

        self.net = build(self.variant, self.device)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != len(S2_BANDS):
            raise SpecError(
                f"TerraMind takes one 12-band S2 L2A frame per item, (B, 1, 12, H, W); got {tuple(x.shape)}. "
                "Use a compositing sensor and the card's bands."
            )
        if self.net is None:
            self.load()
        tokens, (h, w) = self.net(x[:, 0].float())  # type: ignore[misc]
        pooled = tokens.mean(dim=1)
        if ctx.want != "grid":
            return EmbedOutput(pooled=pooled)
        return EmbedOutput(pooled=pooled, grid=tokens.transpose(1, 2).reshape(x.shape[0], -1, h, w))


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(TerraMind)
