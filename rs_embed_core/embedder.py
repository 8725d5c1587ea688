"""The embedder contract plugins implement.

A plugin subclasses Embedder, sets `card`, and implements `load()` and `forward()`. The core
does everything else: fetching, preprocessing, batching, device and dtype, pooling, grid
georeferencing and metadata.
"""

from __future__ import annotations

from typing import Any, ClassVar

from attrs import field, frozen

from .card import ModelCard, Step, Variant
from .grid import GridSpec
from .specs import SensorSpec, TemporalSpec


@frozen(eq=False)
class BatchContext:
    """Side information for one batch, aligned with the batch's first axis."""

    grids: tuple[GridSpec, ...]
    centers_lonlat: tuple[tuple[float, float], ...]
    times: tuple[tuple[Any, ...], ...]  # per item, per frame (datetime or None)
    temporal: TemporalSpec
    sensor: SensorSpec
    want: str  # "pooled" or "grid": embedders may skip work the caller does not need
    band_names: tuple[str, ...] = ()
    valid: Any = None  # numpy bool (B, T, H, W): which input pixels hold real observations


@frozen(eq=False)
class EmbedOutput:
    """What forward returns: pooled (B, D) and/or grid (B, D, h, w), numpy or torch."""

    pooled: Any = None
    grid: Any = None
    extra: dict[str, Any] = field(factory=dict)


class Embedder:
    """Base class of model plugins.

    `uses_torch = True` makes the runner hand `forward` a float32 torch tensor (B, T, C, H, W)
    on `self.device` inside `torch.inference_mode()`; otherwise a numpy array of that shape.
    """

    card: ClassVar[ModelCard]
    uses_torch: ClassVar[bool] = False

    def __init__(self, variant: Variant, device: str = "cpu") -> None:
        self.variant = variant
        self.device = device

    @classmethod
    def default_chain(cls, sensor: SensorSpec) -> tuple[Any, ...]:
        """The preprocessing chain for `sensor` when the user gives none: the card's chain.

        A model that can take other sensors (other bands, another collection) overrides this to
        adapt its chain (e.g. the baselines: any bands, DN scale from the band table).
        """
        return cls.card.preprocessing

    @classmethod
    def check_request(cls, variant: Variant, sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> None:
        """Refuse, before any fetch or weights work, a request this model cannot serve (raise SpecError).

        The default accepts everything; a model with side inputs (wavelengths, dates, a frame count)
        checks here that the sensors can give them.
        """

    @classmethod
    def check_temporal(cls, temporal: TemporalSpec) -> None:
        """Refuse, before any fetch, a time window this model cannot serve (raise SpecError).

        The default accepts every window; an annual product refuses a window across years.
        """

    def load(self) -> None:
        """Build the network and load weights (strictly). Called once, lazily, before forward."""

    def forward(self, x: Any, ctx: BatchContext) -> EmbedOutput:
        raise NotImplementedError

    def output_dims(self, ctx: BatchContext) -> tuple[int, int]:
        """(pooled, grid) feature dimensions of this batch's outputs, which `check_output` holds forward to:
        the variant's, unless the model's width depends on its input (e.g. statistics per input band), in
        which case it overrides this to say what the card's numbers mean for `ctx.band_names`."""
        return self.variant.pooled_dim, self.variant.grid_dim

    @property
    def weights_revision(self) -> str | None:
        return self.variant.weights.revision if self.variant.weights else None


def check_single_frame(x: Any, ctx: BatchContext, model: str) -> None:
    """Refuse a batch that is not (B, 1, C, H, W) with one band name per channel: models without a time
    axis take one composited frame per item, and band-conditioned models read `ctx.band_names`."""
    from .errors import SpecError

    if x.ndim != 5 or x.shape[1] != 1:
        raise SpecError(f"{model} takes one frame per item, (B, 1, C, H, W); got {tuple(x.shape)}. "
                        "Use a compositing sensor (composite='median' or 'mosaic', frames=1).")
    if len(ctx.band_names) != x.shape[2]:
        raise SpecError(f"{model} got {x.shape[2]} channels but {len(ctx.band_names)} band names {list(ctx.band_names)}")


def requested_bands(sensors: tuple[SensorSpec, ...], steps: tuple[Any, ...]) -> tuple[str, ...]:
    """The bands a model will see, as `check_request` knows them before any fetch: a `select_bands`
    step's list when the chain has one, else every sensor's bands in order."""
    selected = next((Step.of(s).params.get("bands") for s in steps if Step.of(s).name == "select_bands"), None)
    return tuple(selected) if selected else tuple(b for s in sensors for b in s.bands)


def check_output(out: EmbedOutput, embedder: Embedder, ctx: BatchContext, batch: int) -> None:
    """Refuse a forward's output that does not match the card: pooled (B, pooled_dim), grid (B, grid_dim, h, w),
    with the dimensions of `embedder.output_dims(ctx)` (the variant's unless the model says otherwise).

    The runner calls this once per batch, right after `forward`; it reads only `.shape` (numpy or torch,
    no copy), so it costs nothing next to the forward. A wrong shape is a plugin bug: without this check
    it would surface later as a wrong-sized vector in an export, or not at all.
    """
    from .errors import PluginError

    pooled_dim, grid_dim = embedder.output_dims(ctx)
    who = f"{type(embedder).card.id}/{embedder.variant.name}"
    if out.pooled is None and out.grid is None:
        raise PluginError(f"{who}: forward returned neither a pooled nor a grid output")
    if out.pooled is not None:
        shape = tuple(int(n) for n in out.pooled.shape)
        if shape != (batch, pooled_dim):
            raise PluginError(f"{who}: forward returned pooled {shape}; the card says ({batch}, {pooled_dim}) "
                              f"for a batch of {batch} (pooled_dim={pooled_dim})")
    if out.grid is not None:
        shape = tuple(int(n) for n in out.grid.shape)
        if len(shape) != 4 or shape[:2] != (batch, grid_dim):
            raise PluginError(f"{who}: forward returned grid {shape}; the card says ({batch}, {grid_dim}, h, w) "
                              f"for a batch of {batch} (grid_dim={grid_dim})")
