"""The `rs-embed` command: list and explain models and plugins, embed ROIs, inspect inputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np

from .errors import RsEmbedError
from .specs import _COMPOSITES as COMPOSITES


# Hints the library words for Python callers, and what they mean on the command line. The library raises
# one message for both; the CLI rewrites it at its boundary so every hint names something you can type here.
_CLI_HINTS: tuple[tuple[str, Any], ...] = (
    (r"Pass continue_on_error=True to get the other results with ItemError records in place\.",
     "Rerun with --continue-on-error to get the other results (the failed ROIs are listed instead)."),
    (r"pass LocalProvider\('/path/to/dir'\), use backend='local:/path/to/dir'",
     "use --backend local:/path/to/dir"),
    (r"LocalProvider\(\.\.\., band_map=\{'B4': 1, 'B3': 2, \.\.\.\}\)",
     '--provider-config FILE holding {"local": {"paths": ..., "band_map": {"B4": 1, "B3": 2, ...}}}'),
    (r"LocalProvider\(\.\.\., band_pattern=r'([^']*)'\)",
     lambda m: f'--provider-config FILE holding {{"local": {{"paths": ..., "band_pattern": {json.dumps(m[1])}}}}}'),
    (r"LocalProvider\(collection=\.\.\.\)", '--provider-config FILE holding {"local": {..., "collection": ...}}'),
    (r"LocalProvider\(collection='([^']*)'\)", lambda m: f'--provider-config with "collection": {json.dumps(m[1])}'),
    # then any keyword argument that has an option of the same name
    (r"\b(input_prep|pooling|backend|composite|variant|device)=(['\"])([^'\"]*)\2",
     lambda m: f"--{m[1].replace('_', '-')} {m[3]}"),
    (r"\bweights=(['\"]?)(<[^>]*>)\1", r"--weights \2"),
    (r"\bresume=True\b", "--resume"),
    (r"\bsensor=SensorSpec\(\.\.\.\)", "--collection C --bands B1,B2 --scale-m M"),
)


def cli_words(message: str) -> str:
    """A library error's message with its Python-only hints said as CLI options (JSON where a file is meant)."""
    import re

    for pattern, replacement in _CLI_HINTS:
        message = re.sub(pattern, replacement, message)
    return message


def _fail(exc: BaseException, code: int = 2) -> None:
    lines = cli_words(str(exc)).splitlines() or [type(exc).__name__]
    click.echo(f"error: {lines[0]}", err=True)
    extra = lines[1:]
    if len(extra) > 7:  # keep the closing hint in view
        extra = extra[:6] + ["..."] + extra[-1:]
    for line in extra:
        click.echo(f"  {line.strip()}", err=True)
    sys.exit(code)


class _Group(click.Group):
    """Turns every rs-embed error, and click's own usage errors, into one readable "error:" line and exit 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RsEmbedError as exc:
            _fail(exc)
        except OSError as exc:  # the system refused (read-only, no such folder, disk full): exit 1, no traceback
            if ctx.params.get("debug"):
                raise
            _fail(exc, 1)

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(130)
        except click.UsageError as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(package_name="rs-embed-core")
@click.option("--debug", is_flag=True, help="Show the traceback of a system error instead of one line.")
def main(debug: bool) -> None:
    """Embeddings from remote-sensing foundation models for any (model, place, time)."""


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def models(as_json: bool) -> None:
    """List installed models."""
    from .api import describe_model, list_models

    rows = [describe_model(m) for m in list_models()]
    if as_json:
        _dump([{k: r[k] for k in ("id", "aliases", "description", "input", "plugin")} |
               {"variants": [v["name"] for v in r["variants"]]} for r in rows])
    elif not rows:
        click.echo("no models installed (see `rs-embed plugins`)")
    for r in rows if not as_json else ():
        i = r["input"]
        alias = f" (aliases: {', '.join(r['aliases'])})" if r["aliases"] else ""
        click.echo(f"{r['id']}{alias}  [{r['plugin']}]")
        click.echo(f"    {r['description'].splitlines()[0] if r['description'] else ''}")
        click.echo(f"    input: {i['collection']} {','.join(i['bands'])} @ {float(i['gsd_m']):g} m, "
                   f"variants: {', '.join(v['name'] for v in r['variants'])}")
    trouble = _plugin_trouble()
    if trouble:
        click.echo(trouble, err=True)


def _plugin_trouble() -> str:
    """One line when some plugins failed to load or two plugins claim one name: the list above is incomplete."""
    from .plugins import load_failures
    from .registry import tables

    parts = []
    failed = set(load_failures) | {p for p, _ in tables().broken}
    if failed:
        parts.append(f"{len(failed)} plugin{'s' if len(failed) != 1 else ''} failed to load")
    conflicts = tables().conflicts
    if conflicts:
        parts.append(f"{len(conflicts)} name{'s' if len(conflicts) != 1 else ''} refused because two plugins "
                     f"register {'them' if len(conflicts) != 1 else 'it'} ({', '.join(c.name for c in conflicts)})")
    return f"note: {' and '.join(parts)}: see `rs-embed plugins`" if parts else ""


@main.command()
@click.argument("model")
def describe(model: str) -> None:
    """Show a model card: input, preprocessing chain, variants, weights, outputs (JSON)."""
    from .api import describe_model

    _dump(describe_model(model))


@main.command()
def plugins() -> None:
    """List loaded plugins and the ones that failed to load, with the reason (JSON)."""
    from .plugins import plugin_info

    _dump(plugin_info())


def _temporal(start: str | None, end: str | None, year: int | None):
    from .errors import SpecError
    from .specs import TemporalSpec

    if year is not None:
        if start or end:
            raise SpecError("give either --year or --start/--end, not both")
        return TemporalSpec.year(year)
    if not (start and end):
        raise SpecError("a time window is required: --start YYYY-MM-DD --end YYYY-MM-DD, or --year YYYY")
    return TemporalSpec.range(start, end)


def _rois(points: tuple[str, ...], bboxes: tuple[str, ...], roi_file: str | None, buffer_m: float):
    from .errors import SpecError
    from .rois import read_rois
    from .specs import BBox, PointBuffer

    out: list[tuple[str, Any]] = []
    for k, p in enumerate(points, start=1):
        parts = [s for s in p.replace(";", ",").split(",") if s.strip()]
        if len(parts) not in (2, 3):
            raise SpecError(f"--point takes LON,LAT or LON,LAT,BUFFER_M, got {p!r}")
        vals = _numbers(parts, "--point", p)
        out.append((f"point_{k}", PointBuffer(vals[0], vals[1], vals[2] if len(vals) == 3 else buffer_m)))
    for k, b in enumerate(bboxes, start=1):
        parts = [s for s in b.split(",") if s.strip()]
        if len(parts) != 4:
            raise SpecError(f"--bbox takes MINLON,MINLAT,MAXLON,MAXLAT, got {b!r}")
        out.append((f"bbox_{k}", BBox(*_numbers(parts, "--bbox", b))))
    if roi_file:
        out.extend(read_rois(roi_file, buffer_m))
    if not out:
        raise SpecError("no ROI given: use --point, --bbox or --rois FILE")
    return out


def _numbers(parts: list[str], option: str, raw: str) -> list[float]:
    from .errors import SpecError

    try:
        return [float(v) for v in parts]
    except ValueError:
        raise SpecError(f"{option} takes numbers, got {raw!r}") from None


def _writable_file(path: str | None, option: str) -> None:
    """An output file's folder must exist and be writable before any work starts."""
    if not path:
        return
    import os

    from .errors import SpecError

    folder = Path(path).expanduser().resolve().parent
    if not folder.is_dir():
        raise SpecError(f"{option}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK):
        raise SpecError(f"{option}: the folder {folder} is not writable")


def _sensor(collection: str | None, bands: str | None, scale_m: float | None, composite: str | None):
    from .specs import SensorSpec

    from .errors import SpecError

    if collection is None and bands is None and scale_m is None:
        if composite is not None:
            raise SpecError("--composite needs --collection, --bands and --scale-m (it sets how that sensor is composited)")
        return None

    if not (collection and bands and scale_m):
        raise SpecError("--collection, --bands and --scale-m go together")
    return SensorSpec(collection, tuple(b.strip() for b in bands.split(",")), scale_m, composite=composite or "median")


_roi_options = [
    click.option("--point", "points", multiple=True, help="LON,LAT[,BUFFER_M]; repeatable."),
    click.option("--bbox", "bboxes", multiple=True, help="MINLON,MINLAT,MAXLON,MAXLAT; repeatable."),
    click.option("--rois", "roi_file", type=click.Path(dir_okay=False), help="CSV or GeoJSON file of ROIs."),
    click.option("--buffer-m", default=2048.0, show_default=True,
                 help="Half-width in metres of the square around a point given without one."),
    click.option("--start", help="Window start, YYYY-MM-DD (inclusive)."),
    click.option("--end", help="Window end, YYYY-MM-DD (exclusive)."),
    click.option("--year", type=int, help="Whole calendar year instead of --start/--end."),
    click.option("--backend", default="local", show_default=True,
                 help="Provider name or name:argument, e.g. local:/path/to/scenes."),
    click.option("--provider-config", "provider_config", type=click.Path(dir_okay=False, exists=True),
                 help='JSON {"local": {"paths": ..., "band_map": ..., "dates": ..., "nodata": ..., '
                      '"band_pattern": ...}}: the provider with these options (instead of --backend).'),
]

# how the work runs (the same keywords as get_embeddings_batch / export_batch)
_run_options = [
    click.option("--workers", type=click.IntRange(min=1), default=None,
                 help="Fetch + preprocessing workers (processes for local files, threads for network providers). "
                      "[default: one per CPU, or the provider's own concurrency]"),
    click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16", "fp16"]), default="fp32",
                 show_default=True, help="Model arithmetic: fp32 is reference-equal (TF32 off); tf32 on CUDA "
                                         "tensor cores; bf16/fp16 by autocast."),
]


def _backend(backend: str, provider_config: str | None) -> Any:
    """--backend, or the provider --provider-config describes (its options are the provider's arguments)."""
    if provider_config is None:
        return backend
    from .errors import SpecError
    from .registry import provider_factory

    try:
        doc = json.loads(Path(provider_config).read_text())
    except ValueError as exc:
        raise SpecError(f"--provider-config {provider_config} is not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or len(doc) != 1 or not isinstance(next(iter(doc.values())), dict):
        raise SpecError('--provider-config holds one provider: {"local": {"paths": "scenes/", ...}}')
    (name, options), = doc.items()
    try:
        return provider_factory(name)(**options)
    except TypeError as exc:
        raise SpecError(f"--provider-config: {name} does not take these options: {exc}") from None


def _preprocessing(path: str | None) -> Any:
    if path is None:
        return None
    from .errors import SpecError

    try:
        steps = json.loads(Path(path).read_text())
    except ValueError as exc:
        raise SpecError(f"--preprocessing {path} is not valid JSON: {exc}") from None
    if not isinstance(steps, list):
        raise SpecError('--preprocessing holds a list of steps: [{"name": "select_bands", "params": {...}}, ...]')
    return steps


def _with(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


@main.command()
@click.argument("model")
@_with(_roi_options)
@click.option("--output", "mode", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True)
@click.option("--pooling", type=click.Choice(["model", "mean", "max"]), default="model", show_default=True)
@click.option("--variant", help="Model variant (see `rs-embed describe MODEL`).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--collection", help="Override the model's input collection (with --bands, --scale-m).")
@click.option("--bands", help="Comma-separated band names.")
@click.option("--scale-m", type=float, help="Ground sampling distance in metres.")
@click.option("--composite", type=click.Choice(COMPOSITES))
@click.option("--input-prep", default="resize", show_default=True, type=click.Choice(["resize", "tile", "auto"]),
              help="Large ROIs: resize whole, cut into model-sized tiles, or tile only when resizing would shrink >2x.")
@click.option("--weights", "weights", type=click.Path(dir_okay=False, exists=True),
              help="Your own checkpoint (.safetensors/.pt), pinned by its sha256 and loaded strictly.")
@click.option("--preprocessing", "preprocessing", type=click.Path(dir_okay=False, exists=True),
              help="JSON list of steps replacing the card's chain (see `rs-embed describe MODEL`).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False),
              help="Write the full vectors and metadata to .json or .npz; without it, a summary is printed.")
@click.option("--continue-on-error", is_flag=True,
              help="Write what succeeded and list the ROIs that failed (exit status 1) instead of stopping.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_with(_run_options)
def embed(model, points, bboxes, roi_file, buffer_m, start, end, year, backend, provider_config, mode, pooling,
          variant, device, batch_size, collection, bands, scale_m, composite, input_prep, weights, preprocessing,
          out_path, continue_on_error, quiet, workers, precision) -> None:
    """Embed ROIs with MODEL; print a summary, or write the vectors with their metadata to --out."""
    from .api import get_embeddings_batch
    from .errors import ItemError
    from .specs import OutputSpec

    temporal = _temporal(start, end, year)
    rois = _rois(points, bboxes, roi_file, buffer_m)
    output = OutputSpec.grid() if mode == "grid" else OutputSpec.pooled(pooling)
    sensor = _sensor(collection, bands, scale_m, composite)
    if out_path and Path(out_path).suffix.lower() not in (".json", ".npz"):
        from .errors import SpecError

        raise SpecError(f"--out must end in .json or .npz, got {out_path}")
    _writable_file(out_path, "--out")
    steps = _preprocessing(preprocessing)
    results = get_embeddings_batch(model, [r for _, r in rois], temporal, output, _backend(backend, provider_config),
                                   device, input_prep, sensor=sensor, variant=variant, preprocessing=steps,
                                   weights=weights, batch_size=batch_size, continue_on_error=continue_on_error,
                                   workers=workers, precision=precision,
                                   progress=False if quiet else None)
    failed = [(n, r) for (n, _), r in zip(rois, results) if isinstance(r, ItemError)]
    done = [(n, r) for (n, _), r in zip(rois, results) if not isinstance(r, ItemError)]
    names, embs = [n for n, _ in done], [e for _, e in done]
    if out_path and embs:
        if out_path.lower().endswith(".npz"):
            write_npz(out_path, names, embs)
        else:
            doc = [{"name": n, "shape": list(e.shape), "embedding": _json_values(e.data), "meta": e.meta,
                    "grid": None if e.grid is None else {"crs": e.grid.crs, "transform": list(e.grid.transform),
                                                         "valid": None if e.valid is None else e.valid.tolist()}}
                   for n, e in zip(names, embs)]
            _atomic_write(out_path, lambda f: f.write(json.dumps(doc, default=str).encode()))
        click.echo(f"wrote {len(embs)} embedding{'s' if len(embs) != 1 else ''} {tuple(embs[0].shape)} to {out_path}",
                   err=True)
    if embs:
        _summary(names, embs, to_stderr=bool(out_path))
    for n, r in failed:
        click.echo(f"failed: {n}: {r.stage}: {r.error_type}: {r.message}", err=True)
    if failed:
        click.echo(f"{len(failed)} of {len(rois)} ROI{'s' if len(rois) != 1 else ''} failed"
                   + (f"; {out_path} holds the other {len(embs)}" if out_path and embs else ""), err=True)
        sys.exit(1)


def _summary(names: list[str], embs: list[Any], to_stderr: bool = True) -> None:
    """A glance at the result: shape, valid input fraction, norm and first values per ROI, and cosine similarities.
    Without --out this is what `embed` prints (a full vector is hundreds of lines); --out gets the vectors."""
    width = max(len(n) for n in names)
    for n, e in zip(names, embs):
        flat = np.ravel(e.data)
        head = ", ".join(f"{v:.3g}" for v in flat[:4]) + (", ..." if flat.size > 4 else "")
        click.echo(f"  {n:<{width}}  {tuple(e.shape)}  valid input {e.meta.get('valid_fraction', float('nan')):6.1%}  "
                   f"|e| = {float(np.linalg.norm(flat[np.isfinite(flat)])):.4f}  [{head}]", err=to_stderr)
    if 1 < len(embs) <= 12 and embs[0].data.ndim == 1:
        x = np.stack([e.data for e in embs]).astype(np.float64)
        centred = len(embs) >= 3  # centring two vectors makes them exact opposites: cosine always -1
        if centred:
            x = x - x.mean(axis=0)  # raw features share a large common component
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = x @ x.T
        click.echo("cosine similarity" + (" (features centred across these ROIs):" if centred else ":"), err=to_stderr)
        click.echo(" " * (width + 2) + "".join(f"{n[:8]:>9}" for n in names), err=to_stderr)
        for n, row in zip(names, sim):
            click.echo(f"  {n:<{width}}" + "".join(f"{v:9.2f}" for v in row), err=to_stderr)
    if not to_stderr:
        click.echo("(a summary: --out FILE.json or FILE.npz writes the full vectors and their metadata)")


def _json_values(a: np.ndarray) -> Any:
    """Nested lists for JSON, NaN (a grid cell that saw no valid input) as null."""
    return np.where(np.isnan(a), None, a.astype(object)).tolist() if np.isnan(a).any() else a.tolist()


def write_npz(path: str, names: list[str], embs: list[Any]) -> None:
    """One array `embeddings` (N, ...) plus `names` and per-item `meta` JSON strings; grids add each
    token grid's `crs`, affine `transform` (a, b, c, d, e, f) and cell `valid` mask, so they stay georeferenced."""
    grids = {}
    if embs and embs[0].grid is not None:
        grids = {"crs": np.asarray([e.grid.crs for e in embs]),
                 "transform": np.asarray([list(e.grid.transform) for e in embs], dtype=np.float64)}
        if all(e.valid is not None for e in embs):
            grids["valid"] = np.stack([e.valid for e in embs])
    _atomic_write(path, lambda f: np.savez(
        f,
        embeddings=np.stack([e.data for e in embs]),
        names=np.asarray(names),
        meta=np.asarray([json.dumps(e.meta, default=str) for e in embs]),
        **grids,
    ))


def _atomic_write(path: str, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename: an interrupted run never
    leaves a half-written file in place of a good one."""
    import os
    import tempfile

    dest = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent if str(dest.parent) else ".")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; an output file gets the usual mode
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@main.command()
@_with(_roi_options)
@click.option("--collection", required=True, help="Collection id, e.g. COPERNICUS/S2_SR_HARMONIZED.")
@click.option("--bands", required=True, help="Comma-separated band names, e.g. B4,B3,B2.")
@click.option("--scale-m", type=float, required=True, help="Ground sampling distance in metres.")
@click.option("--composite", type=click.Choice(COMPOSITES), default="median", show_default=True)
@click.option("--quicklook", type=click.Path(dir_okay=False), help="Write an RGB PNG of the patch.")
def inspect(points, bboxes, roi_file, buffer_m, start, end, year, backend, provider_config, collection, bands, scale_m,
            composite, quicklook) -> None:
    """Fetch one ROI's raw input patch and report band statistics and validity (JSON)."""
    from .api import inspect_provider_patch
    from .errors import SpecError

    rois = _rois(points, bboxes, roi_file, buffer_m)
    if len(rois) != 1:
        raise SpecError(f"inspect takes exactly one ROI, got {len(rois)}")
    _writable_file(quicklook, "--quicklook")
    sensor = _sensor(collection, bands, scale_m, composite)
    report = inspect_provider_patch(rois[0][1], _temporal(start, end, year), sensor,
                                    _backend(backend, provider_config), quicklook=quicklook)
    from .convert import converter

    # the ROI as used: a --point without its own buffer got --buffer-m's default, which is otherwise only in --help
    _dump({"roi": {"name": rois[0][0], **converter.unstructure(rois[0][1])}}
          | report)


@main.command()
@_with(_roi_options)
@click.option("--models", required=True, help="Comma-separated model ids, e.g. remoteclip,prithvi.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Export folder.")
@click.option("--layout", type=click.Choice(["per_item", "combined"]), default="per_item", show_default=True)
@click.option("--format", "fmt", type=click.Choice(["auto", "parquet", "npz"]), default="auto", show_default=True)
@click.option("--output", "mode", type=click.Choice(["pooled", "grid"]), default="pooled", show_default=True)
@click.option("--input-prep", default="resize", show_default=True, type=click.Choice(["resize", "tile", "auto"]))
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", default=16, show_default=True)
@click.option("--save-inputs", is_flag=True, help="Also write each distinct fetched input as GeoTIFF.")
@click.option("--resume", is_flag=True, help="Continue an interrupted export in the same folder.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--executor", default="local", show_default=True,
              help="Where fetches and models run: local (this process), or an installed executor plugin's name "
                   "(ray: pip install rs-embed-ray). This process writes the output either way.")
@click.option("--ray-address", default=None,
              help="With --executor ray: the cluster to join (host:port, ray://host:port or auto). "
                   "[default: $RAY_ADDRESS, else a local Ray instance]")
@_with(_run_options)
def export(points, bboxes, roi_file, buffer_m, start, end, year, backend, provider_config, models, out_dir, layout,
           fmt, mode, input_prep, device, batch_size, save_inputs, resume, quiet, executor, ray_address, workers,
           precision) -> None:
    """Export embeddings of many ROIs x several models to a resumable dataset folder."""
    from .export import export_batch
    from .specs import OutputSpec

    temporal = _temporal(start, end, year)
    rois = _rois(points, bboxes, roi_file, buffer_m)
    ids = [m.strip() for m in models.split(",") if m.strip()]
    parent = Path(out_dir).expanduser().resolve().parent
    if not parent.is_dir():
        from .errors import SpecError

        raise SpecError(f"--out: the folder {parent} does not exist")
    output = OutputSpec.grid() if mode == "grid" else OutputSpec.pooled()
    from .plugins import resolve_executor

    if ray_address is not None and executor != "ray":
        from .errors import SpecError

        raise SpecError("--ray-address needs --executor ray")
    runner_ = resolve_executor(executor, **({"address": ray_address} if ray_address is not None else {}))
    res = export_batch([r for _, r in rois], temporal, ids, out_dir, names=[n for n, _ in rois], layout=layout,
                       backend=_backend(backend, provider_config), save_inputs=save_inputs, resume=resume,
                       output=output, device=device,
                       input_prep=input_prep, format=fmt, batch_size=batch_size, workers=workers, precision=precision,
                       progress=False if quiet else None, executor=runner_ or "local")
    pairs = len(rois) * len(ids)
    click.echo(f"exported {len(rois)} ROI{'s' if len(rois) != 1 else ''} x {len(ids)} model{'s' if len(ids) != 1 else ''}"
               f" to {res.out}: {res.ok} of {pairs} ok, {res.failed} failed"
               + (f", {res.skipped} done by an earlier run" if res.skipped else ""), err=True)
    for key, files in res.files.items():
        shown = files if isinstance(files, str) else f"{len(files)} files"
        click.echo(f"  {key}: {shown}", err=True)
    if res.failed:
        click.echo(f"  failed items are listed in {res.out / 'manifest.json'}; rerun with --resume to retry them",
                   err=True)


@main.command("sample-data")
@click.argument("out_dir", type=click.Path(file_okay=False))
def sample_data(out_dir: str) -> None:
    """Write the project's synthetic Sentinel-2-like sample scene and a points.csv to OUT_DIR."""
    import os

    from .errors import SpecError
    from .sample import SAMPLE_POINTS, make_sample_scene

    target = Path(out_dir).expanduser().resolve()
    parent = next((p for p in (target, *target.parents) if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SpecError(f"cannot write the sample scene into {target}: {parent} is not a writable folder")
    files = make_sample_scene(out_dir)
    pts = Path(out_dir) / "points.csv"
    pts.write_text("name,lon,lat\n" + "".join(f"{n},{lon},{lat}\n" for n, lon, lat in SAMPLE_POINTS))
    for f in files:
        click.echo(str(f))
    click.echo(str(pts))


@main.command("quicklook")
@click.argument("export", type=click.Path(file_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="map.png (a picture with lon/lat axes) or map.html (interactive; needs the `maps` extra).")
@click.option("--model", help="The export's model key or id (when it holds several).")
@click.option("--level", type=click.Choice(["auto", "item", "cell"]), default="auto", show_default=True,
              help="Items, or the token cells of a grid export (auto: cells for grid exports).")
def quicklook_command(export: str, out_path: str, model: str | None, level: str) -> None:
    """Map EXPORT's embeddings in PCA colours (PC1-3 -> RGB): similar embeddings look alike."""
    from .errors import SpecError
    from .quicklook import quicklook, quicklook_map

    suffix = Path(out_path).suffix.lower()
    if suffix not in (".png", ".html"):
        raise SpecError(f"--out must end in .png or .html, got {out_path}")
    _writable_file(out_path, "--out")
    if suffix == ".png":
        quicklook(export, out_path, model=model, level=level)
    else:
        html = quicklook_map(export, model=model, level=level).get_root().render().encode()
        _atomic_write(out_path, lambda f: f.write(html))
    click.echo(f"wrote {out_path}", err=True)


from .search_cli import search_command  # noqa: E402 - the command lives in its own module

main.add_command(search_command)

if __name__ == "__main__":
    main()
