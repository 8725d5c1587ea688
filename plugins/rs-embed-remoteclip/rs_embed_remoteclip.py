"""RemoteCLIP (Liu et al., IEEE TGRS 2024) for rs-embed: Sentinel-2 RGB image and text embeddings.

RemoteCLIP is CLIP continually pre-trained on remote-sensing image-text pairs. Its authors publish
open_clip-format checkpoints (`chendelong/RemoteCLIP` on the Hugging Face Hub) and load them with
`open_clip.create_model_and_transforms(name)` + `load_state_dict`. The network is rebuilt here in
torch from `rs_embed_core.nn`, with open_clip's parameter names, so those checkpoints load strictly
and no open_clip / timm is needed at run time (open_clip is the test-time reference).

- `RemoteCLIP` (model id "remoteclip", alias "remoteclip_s2rgb"): pooled = the projected image
  embedding (open_clip `encode_image`, not normalised); grid = the patch tokens after the last
  transformer block and `ln_post` (width x 7 x 7 for ViT-B-32).
- `embed_text(texts)`: the CLIP text tower (open_clip `encode_text`, not normalised), for zero-shot
  scoring of places against prompts and text search over exported image embeddings.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from rs_embed_core.card import InputSpec, ModelCard, Step, Variant, WeightsSpec
from rs_embed_core.embedder import BatchContext, Embedder, EmbedOutput
from rs_embed_core.errors import SpecError, WeightsError
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.weights import weights_file
from rs_embed_remoteclip_tokenizer import ClipTokenizer, merges_digest

if TYPE_CHECKING:
    import torch

    from rs_embed_remoteclip_model import CLIP

__all__ = ["RemoteCLIP", "embed_text", "tokenizer", "register_embedders"]

REPO_ID = "chendelong/RemoteCLIP"
# The snapshot the RemoteCLIP README's cache path and its users load from. The sha256 values (and sizes:
# ViT-B-32 605,208,421 bytes, ViT-L-14 1,710,613,765 bytes) are those several independent users recorded
# for these files; they were not recomputed here (no Hub access), a mismatch fails loudly on load.
REVISION = "bf1d8a3ccf2ddbf7c875705e46373bfe542bce38"
WEIGHTS_LICENSE = "apache-2.0"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
S2_RGB = ("B4", "B3", "B2")
# Sentinel-2 L2A digital numbers (reflectance x 10000) mapped linearly to 0..255: reflectance 0..0.3,
# the usual true-colour stretch, gives natural-looking RGB like the aerial photos RemoteCLIP saw.
RGB_LOW_DN, RGB_HIGH_DN = 0.0, 3000.0

# The BPE merge rules of OpenAI's CLIP tokenizer, pinned by content (`merges_digest`: the sha256 of
# the 48,894 "a b" rules joined by newlines), computed here from the copy open_clip ships. Sources, in
# order: $RS_EMBED_CLIP_BPE (a file you place), open_clip's bundled gzip (found without importing
# open_clip), then merges.txt of openai/clip-vit-base-patch32 at a pinned commit, fetched like weights.
# That Hub file could not be downloaded here; it is expected to hold the same rules (a mismatch is a
# WeightsError naming the file, never a silently different tokenizer).
BPE_ENV = "RS_EMBED_CLIP_BPE"
BPE_MERGES_SHA256 = "f61f2adf497e6f5357c347aeb4646fabe82f341e946de5bdec5d2858e41bef4a"
BPE_SPEC = WeightsSpec(
    repo_id="openai/clip-vit-base-patch32",
    revision="d15b5f29721ca72dac15f8526b284be910de18be",
    filename="merges.txt",
    sha256=BPE_MERGES_SHA256,
    license="mit",
)

TEXT_BATCH = 256  # prompts per text-tower pass



def _config(embed_dim: int, vision: tuple[int, int, int, int], text: tuple[int, int, int]) -> dict[str, Any]:
    width, layers, heads, patch = vision
    t_width, t_layers, t_heads = text
    return {
        "embed_dim": embed_dim,
        "image_size": 224,
        "patch_size": patch,
        "width": width,
        "layers": layers,
        "heads": heads,
        "text_width": t_width,
        "text_layers": t_layers,
        "text_heads": t_heads,
        "context_length": 77,
        "vocab_size": 49408,
        "act": "gelu",  # open_clip's "ViT-B-32"/"ViT-L-14" configs, which the official loading code builds
    }


VIT_B_32 = Variant(
    "ViT-B-32", pooled_dim=512, grid_dim=768,
    weights=WeightsSpec(REPO_ID, REVISION, "RemoteCLIP-ViT-B-32.pt",
                        "60014e395d930a3f2963d1d89c8522bf4ad56775571e4356e866864789af85c4", WEIGHTS_LICENSE),
    params=_config(512, (768, 12, 12, 32), (512, 12, 8)),
)
VIT_L_14 = Variant(
    "ViT-L-14", pooled_dim=768, grid_dim=1024,
    weights=WeightsSpec(REPO_ID, REVISION, "RemoteCLIP-ViT-L-14.pt",
                        "fcc2a7e21e171f4ffcb7a9c0206b8b74ac0c9eb83c67b576958b7a4ed6c8cecb", WEIGHTS_LICENSE),
    params=_config(768, (1024, 24, 16, 14), (768, 12, 12)),
)

NOTES = """\
Input: Sentinel-2 L2A B4, B3, B2 (red, green, blue) at 10 m, one median composite. RemoteCLIP was \
trained on 8-bit aerial/satellite RGB photos, so the chain first maps digital numbers 0..3000 \
(reflectance 0..0.3, a common true-colour stretch) linearly to 0..255 and rounds to integers. This \
stretch is our choice, not the authors' (they do not define Sentinel-2 input); cybergis/rs-embed maps \
0..10000 instead, which gives much darker images. Override it with preprocessing= if your scenes are \
very bright (snow, desert) or dark. Invalid pixels enter as the provider's fill value (0, black).
Deviations from open_clip's image transform (PIL Resize(224, bicubic) of a uint8 image, CenterCrop, \
ToTensor, Normalize): the resize runs on the rounded 8-bit values as float32 (bicubic a=-0.5 with \
antialias, like PIL) and its result is not re-rounded or clipped to 0..255, so over/undershoot at \
edges is kept; PIL rounds and clips to uint8 after each of its two resampling passes and uses fixed-point weights. Measured against open_clip's transform: on smooth (natural-looking) images at most ~1.3 grey levels, ~0.3 on average; on noisy, high-contrast input the unclipped bicubic overshoot near edges can reach tens of grey levels (27 on the white noise of our test, 46 reported on other noisy input) -- the embeddings still agree to cosine >= 0.99998 there. We keep the overshoot (no clip) because the float pipeline is the one the network sees on every other path.
Activation: nn.GELU (exact), as open_clip builds "ViT-B-32"/"ViT-L-14" in the authors' loading code. \
The OpenAI CLIP weights RemoteCLIP starts from were trained with QuickGELU and nothing documents \
which one RemoteCLIP's training used; variant params "act" selects it ("gelu" or "quick_gelu").
Grid: patch tokens after the last transformer block AND ln_post, before the projection (what \
open_clip returns as tokens with output_tokens=True): per-token normalised, the same space the class \
token is pooled from. Pooled and text embeddings are not L2-normalised (open_clip encode_image / \
encode_text); normalise both before cosine scoring.
Weights: the sha256 values are those published for the pinned snapshot by independent users of these \
files; they were not recomputed here (no Hub access). The licence (apache-2.0) is as reported for the \
Hub repository; the GitHub repository carries no licence file. Tokenizer: CLIP's BPE merges, pinned by \
content hash, from $RS_EMBED_CLIP_BPE, open_clip's bundled file, or openai/clip-vit-base-patch32 \
merges.txt at a pinned commit (that download was not exercised here: no Hub access)."""


# --------------------------------------------------------------------------- tokenizer


def _checked_bpe(path: Path, source: str) -> Path:
    got = merges_digest(path)
    if got != BPE_MERGES_SHA256:
        raise WeightsError(f"{source} {path} does not hold CLIP's BPE merges (content sha256 {got})")
    return path


def _local_bpe() -> Path | None:
    """$RS_EMBED_CLIP_BPE, else open_clip's bundled file (located without importing open_clip,
    which would import torchvision)."""
    env = os.environ.get(BPE_ENV)
    if env:
        return _checked_bpe(Path(env).expanduser(), f"${BPE_ENV}")
    spec = importlib.util.find_spec("open_clip")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "bpe_simple_vocab_16e6.txt.gz"
        if path.is_file():
            return _checked_bpe(path, "open_clip's bundled")
    return None


_tokenizer: ClipTokenizer | None = None
_lock = threading.Lock()


def tokenizer(spec: WeightsSpec | None = None) -> ClipTokenizer:
    """The CLIP tokenizer. With `spec`, its merges come from that pinned file (content-checked);
    otherwise from $RS_EMBED_CLIP_BPE, open_clip's bundled copy, or `BPE_SPEC` on the Hub."""
    global _tokenizer
    if spec is not None:
        return ClipTokenizer.from_file(weights_file(spec, content_digest=merges_digest))
    with _lock:
        if _tokenizer is None:
            path = _local_bpe() or weights_file(BPE_SPEC, content_digest=merges_digest)
            _tokenizer = ClipTokenizer.from_file(path)
        return _tokenizer


# --------------------------------------------------------------------------- embedder


class RemoteCLIP(Embedder):
    card = ModelCard(
        id="remoteclip",
        aliases=("remoteclip_s2rgb",),
        description=(
            "RemoteCLIP (Liu et al., IEEE TGRS 2024): OpenAI CLIP continually pre-trained on remote-sensing "
            "image-text pairs; Sentinel-2 RGB in, CLIP image embeddings out, plus a text tower (embed_text) "
            "for zero-shot scoring and text search."
        ),
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", S2_RGB, 10.0, image_size=224, frames=1, composite="median"),
        variants=(VIT_B_32, VIT_L_14),
        default_variant="ViT-B-32",
        preprocessing=(
            Step("select_bands", {"bands": list(S2_RGB)}),
            Step("to_8bit", {"low": RGB_LOW_DN, "high": RGB_HIGH_DN, "round": True}),
            Step("scale", {"factor": 1.0 / 255.0}),
            Step("resize", {"size": 224, "method": "bicubic", "antialias": True, "shortest_side": True}),
            Step("center_crop", {"size": 224}),
            Step("normalize", {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)}),
        ),
        pooled="projected image embedding: ln_post(class token) @ proj, as open_clip encode_image (not L2-normalised)",
        grid="patch tokens after the last transformer block and ln_post, before the projection (width x 7 x 7 for ViT-B-32, 16 x 16 for ViT-L-14)",
        license="code: Apache-2.0 (rs-embed); weights: see each variant",
        citation=(
            "Liu, F., Chen, D., Guan, Z., Zhou, X., Zhu, J., Ye, Q., Fu, L., Zhou, J. RemoteCLIP: A Vision Language "
            "Foundation Model for Remote Sensing. IEEE Transactions on Geoscience and Remote Sensing, 2024. "
            "arXiv:2306.11029"
        ),
        homepage="https://github.com/ChenDelong1999/RemoteCLIP",
        notes=NOTES,
    )
    uses_torch = True

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        super().__init__(variant, device)
        self.model: CLIP | None = None
        self._text: CLIP | None = None

    def load(self) -> None:
        from rs_embed_remoteclip_model import build

        self.model = build(self.variant, self.device, vision=True, text=False)

    def forward(self, x: torch.Tensor, ctx: BatchContext) -> EmbedOutput:
        if x.ndim != 5 or x.shape[1] != 1 or x.shape[2] != 3:
            raise SpecError(
                f"RemoteCLIP takes one RGB frame per item, (B, 1, 3, H, W); got {tuple(x.shape)}. "
                "Use a compositing sensor (composite='median' or 'mosaic') and the bands B4, B3, B2."
            )
        if self.model is None:
            self.load()
        pooled, grid = self.model.encode_image(x[:, 0].float())  # type: ignore[union-attr]
        return EmbedOutput(pooled=pooled, grid=grid if ctx.want == "grid" else None)

    def embed_text(self, texts: str | Iterable[str]) -> np.ndarray:
        """(N, embed_dim) float32 text embeddings of this variant, as open_clip encode_text (not normalised)."""
        import torch

        from rs_embed_remoteclip_model import build

        if self._text is None:
            self._text = build(self.variant, self.device, vision=False, text=True)
        ids = torch.from_numpy(tokenizer()([texts] if isinstance(texts, str) else list(texts)))
        chunks = []
        with torch.inference_mode():
            for part in ids.split(TEXT_BATCH):  # bounded memory for long prompt lists
                chunks.append(self._text.encode_text(part.to(self.device)).float().cpu())
        dim = int(self.variant.params["embed_dim"])
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, dim), np.float32)


_text_models: dict[tuple[str, Any, str], RemoteCLIP] = {}
_text_lock = threading.Lock()


def embed_text(texts: str | Iterable[str], variant: str | None = None, device: str = "cpu") -> np.ndarray:
    """Embed prompts with RemoteCLIP's text tower: (N, D) float32, unnormalised, like open_clip encode_text.

    Score places against prompts with cosine similarity of L2-normalised vectors, e.g.
    `softmax(100 * norm(img) @ norm(embed_text(prompts)).T)` for zero-shot labels.
    """
    var = RemoteCLIP.card.variant(variant)
    key = (var.name, var.weights, device)
    with _text_lock:
        emb = _text_models.get(key)
        if emb is None:
            emb = _text_models[key] = RemoteCLIP(var, device)
    return emb.embed_text(texts)


@hookimpl
def register_embedders(register) -> None:  # type: ignore[no-untyped-def]
    register(RemoteCLIP)
