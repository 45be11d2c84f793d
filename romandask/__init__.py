"""romandask: survey-scale Roman WFI simulation on Dask."""

__version__ = "0.1.0"

