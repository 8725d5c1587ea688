"""rs-embed STAC provider (placeholder while the provider is built)."""
