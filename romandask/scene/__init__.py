"""Scenes: catalogs, PSFs, rendering."""
