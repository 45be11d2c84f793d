"""Survey geometry: footprints and per-SCA WCS."""
