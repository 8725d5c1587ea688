"""rs-embed engine: specs -> fetch -> preprocess -> embed -> write.

Nothing here imports torch at module level; model plugins do that lazily.
"""

__version__ = "0.1.0"
