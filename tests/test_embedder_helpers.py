"""Helpers plugins share in check_request: which bands the model will see."""

from __future__ import annotations

from rs_embed_core.card import Step
from rs_embed_core.embedder import requested_bands
from rs_embed_core.specs import SensorSpec

S2 = SensorSpec("COPERNICUS/S2_SR_HARMONIZED", ("B4", "B3", "B2"), 10)
S1 = SensorSpec("COPERNICUS/S1_GRD", ("VV", "VH"), 10)


def test_requested_bands_are_every_sensors_bands_in_order_without_a_selection():
    assert requested_bands((S2, S1), (Step("resize", {"size": 224}),)) == ("B4", "B3", "B2", "VV", "VH")


def test_a_select_bands_step_decides_in_either_spelling():
    steps = (("select_bands", {"bands": ["B2", "VV"]}), Step("resize", {"size": 224}))
    assert requested_bands((S2, S1), steps) == ("B2", "VV")
    assert requested_bands((S2,), (Step("select_bands", {"bands": ("B3",)}),)) == ("B3",)
