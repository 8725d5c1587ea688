"""A forward's output checked against the card (`rs_embed_core.embedder.check_output`)."""

import numpy as np
import pytest

from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.embedder import BatchContext, EmbedOutput, Embedder, check_output
from rs_embed_core.errors import PluginError
from rs_embed_core.specs import PointBuffer, TemporalSpec
from rs_embed_core.testing import FakeProvider, registered

VARIANT = Variant("base", pooled_dim=32, grid_dim=8)


def test_matching_outputs_pass():
    check_output(EmbedOutput(pooled=np.zeros((3, 32)), grid=np.zeros((3, 8, 2, 2))), VARIANT, 3, "m")
    check_output(EmbedOutput(grid=np.zeros((1, 8, 5, 7))), VARIANT, 1, "m")


def test_torch_outputs_are_read_by_shape_only():
    torch = pytest.importorskip("torch")
    check_output(EmbedOutput(pooled=torch.zeros(2, 32)), VARIANT, 2, "m")


@pytest.mark.parametrize("out, said", [
    (EmbedOutput(pooled=np.zeros((3, 16))), r"pooled \(3, 16\); the card says \(3, 32\)"),
    (EmbedOutput(pooled=np.zeros((2, 32))), r"pooled \(2, 32\); the card says \(3, 32\)"),  # items lost
    (EmbedOutput(pooled=np.zeros(32)), r"pooled \(32,\)"),
    (EmbedOutput(grid=np.zeros((3, 4, 2, 2))), r"grid \(3, 4, 2, 2\); the card says \(3, 8, h, w\)"),
    (EmbedOutput(grid=np.zeros((3, 8, 4))), r"grid \(3, 8, 4\)"),
    (EmbedOutput(), "neither a pooled nor a grid"),
])
def test_mismatches_are_refused_with_both_shapes(out, said):
    with pytest.raises(PluginError, match=said):
        check_output(out, VARIANT, 3, "m")


class _Half(Embedder):
    """Its card promises 32 dimensions; its forward returns 16."""

    card = ModelCard(id="half_dims_test", description="d", input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4",), 10.0),
                     variants=(VARIANT,), preprocessing=())

    def forward(self, x, ctx: BatchContext) -> EmbedOutput:
        return EmbedOutput(pooled=np.zeros((x.shape[0], 16), np.float32))


@pytest.mark.xfail(strict=True, reason="needs the runner to call check_output after forward (lead's runner refactor); "
                                       "remove this marker when it does")
def test_runtime_refuses_a_forward_that_breaks_its_card():
    from rs_embed_core.api import get_embedding

    with registered(_Half), pytest.raises(Exception, match="card says"):
        get_embedding("half_dims_test", PointBuffer(121.5, 31.2, 100), TemporalSpec.range("2022-06-01", "2022-09-01"),
                      backend=FakeProvider())
