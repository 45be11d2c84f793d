"""Detector model: reference data and the counts -> L1 forward model."""
