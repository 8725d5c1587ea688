"""An in-process test plugin: a provider whose pixels are a function of world coordinates, and a
tiny numpy model. Shared by the API and CLI tests."""

from __future__ import annotations

import random
import threading
import time

import numpy as np

from rs_embed import TemporalSpec, UnknownBandError
from rs_embed_core.card import InputSpec, ModelCard, Variant
from rs_embed_core.embedder import EmbedOutput, Embedder
from rs_embed_core.hookspecs import hookimpl
from rs_embed_core.raster import Raster

BANDS = ("B2", "B3", "B4", "B8")
WINDOW = TemporalSpec.range("2022-06-01", "2022-09-01")


class WorldProvider:
    """Pixels are a function of world coordinates, so equal grids give equal pixels."""

    name = "world"
    max_concurrency = 4

    def __init__(self, arg: str | None = None, jitter: float = 0.0):
        self.arg = arg
        self.jitter = jitter
        self.fetched: list[str] = []
        self.lock = threading.Lock()

    def check(self, sensor):
        missing = [b for b in sensor.bands if b not in BANDS]
        if missing:
            raise UnknownBandError(f"world provider has no {missing}; it has {list(BANDS)}")

    def fetch(self, req):
        if self.jitter:
            time.sleep(random.uniform(0, self.jitter))
        with self.lock:
            self.fetched.append(req.key)
        g = req.grid
        xs = np.asarray(g.x_coords())[None, :]
        ys = np.asarray(g.y_coords())[:, None]
        planes = [1000 + 500 * np.sin(xs / 700.0 + k) * np.cos(ys / 900.0 - k) for k in range(len(req.sensor.bands))]
        data = np.stack(planes)[None].astype(np.float32)
        valid = np.ones((1, g.height, g.width), bool)
        valid[0, :2, :2] = False
        return Raster(data, req.sensor.bands, g, (None,), valid, {"provider": "world"})


class TinyModel(Embedder):
    """Mean and std per band per 4x4 cell: D = 2 * C, grid 4 x 4."""

    card = ModelCard(
        id="tiny_test_model", aliases=("TinyAlias",), description="test model",
        input=InputSpec("COPERNICUS/S2_SR_HARMONIZED", BANDS, 10.0, image_size=32),
        variants=(Variant("base", 8, 8), Variant("big", 8, 8, params={"mult": 2.0})),
        preprocessing=[("select_bands", {"bands": list(BANDS)}), ("scale", {"factor": 1e-4}),
                       ("resize", {"size": 32})],
        pooled="mean of the token grid",
    )
    loads = 0

    def load(self):
        type(self).loads += 1
        self.mult = float(self.variant.params.get("mult", 1.0))

    def forward(self, x, ctx):
        assert x.dtype == np.float32 and ctx.valid.shape == (x.shape[0], x.shape[1], x.shape[3], x.shape[4])
        b, t, c, h, w = x.shape
        cells = x[:, 0].reshape(b, c, 4, h // 4, 4, w // 4)
        grid = np.concatenate([cells.mean(axis=(3, 5)), cells.std(axis=(3, 5))], axis=1) * self.mult
        return EmbedOutput(grid=grid)


class _Plugin:
    @hookimpl
    def register_embedders(self, register):
        register(TinyModel)

    @hookimpl
    def register_providers(self, register):
        register("world", WorldProvider)


