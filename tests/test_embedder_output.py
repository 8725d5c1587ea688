"""A forward's output checked against the card (`rs_embed_core.embedder.check_output`)."""

import numpy as np
import pytest

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.embedder import BatchContext, EmbedOutput, Embedder, check_output
from rs_embed_core.errors import PluginError
from rs_embed_core.specs import PointBuffer, SensorSpec, TemporalSpec
from rs_embed_core.testing import FakeProvider, registered

VARIANT = Variant("base", pooled_dim=32, grid_dim=8)
CARD = ModelCard(id="half_dims_test", description="d", input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10.0),
                 variants=(VARIANT,), preprocessing=())


class _Half(Embedder):
    """Its card promises 32 dimensions; its forward returns 16."""

    card = CARD

    def forward(self, x, ctx: BatchContext) -> EmbedOutput:
        return EmbedOutput(pooled=np.zeros((x.shape[0], 16), np.float32))


class _PerBand(Embedder):
    """Two features per input band: its width follows the bands, which it says through output_dims."""

    card = CARD

    def output_dims(self, ctx):
        return 2 * len(ctx.band_names), 2 * len(ctx.band_names)


def _ctx(bands=("B4",)):
    return BatchContext(grids=(), centers_lonlat=(), times=(), temporal=TemporalSpec.year(2022),
                        sensor=SensorSpec("x", bands, 10.0), want="pooled", band_names=bands)


def test_matching_outputs_pass():
    m = _Half(VARIANT)
    check_output(EmbedOutput(pooled=np.zeros((3, 32)), grid=np.zeros((3, 8, 2, 2))), m, _ctx(), 3)
    check_output(EmbedOutput(grid=np.zeros((1, 8, 5, 7))), m, _ctx(), 1)


def test_torch_outputs_are_read_by_shape_only():
    torch = pytest.importorskip("torch")
    check_output(EmbedOutput(pooled=torch.zeros(2, 32)), _Half(VARIANT), _ctx(), 2)


@pytest.mark.parametrize("out, said", [
    (EmbedOutput(pooled=np.zeros((3, 16))), r"pooled \(3, 16\); the card says \(3, 32\)"),
    (EmbedOutput(pooled=np.zeros((2, 32))), r"pooled \(2, 32\); the card says \(3, 32\)"),  # items lost
    (EmbedOutput(pooled=np.zeros(32)), r"pooled \(32,\)"),
    (EmbedOutput(grid=np.zeros((3, 4, 2, 2))), r"grid \(3, 4, 2, 2\); the card says \(3, 8, h, w\)"),
    (EmbedOutput(grid=np.zeros((3, 8, 4))), r"grid \(3, 8, 4\)"),
    (EmbedOutput(), "neither a pooled nor a grid"),
])
def test_mismatches_are_refused_with_both_shapes(out, said):
    with pytest.raises(PluginError, match="half_dims_test/base: .*" + said):
        check_output(out, _Half(VARIANT), _ctx(), 3)


def test_a_model_whose_width_follows_its_bands_says_so():
    m = _PerBand(VARIANT)
    check_output(EmbedOutput(pooled=np.zeros((1, 6))), m, _ctx(("B4", "B3", "B2")), 1)
    with pytest.raises(PluginError, match=r"the card says \(1, 2\)"):
        check_output(EmbedOutput(pooled=np.zeros((1, 6))), m, _ctx(("B4",)), 1)


def test_spectral_stats_declares_its_width_for_other_bands():
    pytest.importorskip("rs_embed_baseline")
    from rs_embed_core.registry import embedder_class

    cls = embedder_class("spectral_stats")
    m = cls(cls.card.variant())
    ctx = _ctx(("B4", "B3", "B2"))
    out = m.forward(np.full((1, 1, 3, 8, 8), 1000.0, np.float32), ctx)  # 5 statistics x 3 bands, no index
    check_output(out, m, ctx, 1)


def test_runtime_refuses_a_forward_that_breaks_its_card():
    from rs_embed_core.api import get_embedding

    with registered(_Half), pytest.raises(Exception, match="card says"):
        get_embedding("half_dims_test", PointBuffer(121.5, 31.2, 100), TemporalSpec.range("2022-06-01", "2022-09-01"),
                      backend=FakeProvider())
