"""L1 -> L2 calibration: the steps, the ramp fitters, and the gen_cal_image-style entry point.

``romandask.calibrate(config)`` calibrates as ``romandask calibrate config.yaml``
does (see :func:`.standalone.calibrate`): this package is callable, so that the
seed's ``gen_cal_image(config)`` has its direct counterpart while the modules
below stay importable as ``romandask.calibrate.core`` and so on.
"""

import sys
import types

from .standalone import calibrate

__all__ = ["calibrate"]


class _CallablePackage(types.ModuleType):
    def __call__(self, config, **kwargs):
        return calibrate(config, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
