"""romandask: survey-scale Roman WFI simulation on Dask."""

__version__ = "0.1.0"

from . import calibrate  # noqa: E402  (callable: romandask.calibrate(config))
from . import inject  # noqa: E402  (callable: romandask.inject(files, catalog, out))
from .inject import inject_sources_into_l2  # noqa: E402
from . import mosaic  # noqa: E402  (callable: romandask.mosaic(files, outdir, ...))
from .store import RunStore, open_store  # noqa: E402

__all__ = ["RunStore", "__version__", "calibrate", "inject", "inject_sources_into_l2", "mosaic",
           "open_store"]
