"""rs-embed engine: specs -> fetch -> preprocess -> embed -> write.

Nothing here imports torch at module level; model plugins do that lazily.
"""

from importlib import metadata as _metadata

__version__ = "0.1.0"

# Our distribution is `rs-embed-core`. The unrelated project published on the package index as `rs-embed`
# also installs a top-level `rs_embed` package; with both installed, whichever was written last owns that
# import name and the other's modules get mixed in. Refuse at import instead of running on a mixture.
FOREIGN_DISTRIBUTION = "rs-embed"


def _refuse_foreign_rs_embed() -> None:
    try:
        other = _metadata.distribution(FOREIGN_DISTRIBUTION)
    except _metadata.PackageNotFoundError:
        return
    raise ImportError(
        f"the distribution {FOREIGN_DISTRIBUTION!r} {other.version} is installed beside rs-embed-core; it is a "
        "different project that also owns the import name 'rs_embed', so the two cannot share one environment. "
        f"Uninstall it (pip uninstall {FOREIGN_DISTRIBUTION}), then reinstall the core "
        "(pip install -c constraints.txt -e . from this repository) so 'rs_embed' is ours again; or use a separate "
        "virtual environment for each."
    )


_refuse_foreign_rs_embed()
