"""romandask: survey-scale Roman WFI simulation on Dask."""

__version__ = "0.1.0"

from . import calibrate  # noqa: E402  (callable: romandask.calibrate(config))

__all__ = ["__version__", "calibrate"]
