"""cfs: a plugin-based continual-learning and few-shot-learning toolkit for PyTorch.

Plugins implement hooks declared in :mod:`cfs.hookspec` with the marker exported here::

    from cfs import hookimpl
"""

import pluggy

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("cfs")

__all__ = ["hookimpl", "__version__"]
