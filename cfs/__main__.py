"""``python -m cfs`` is the ``cfs`` command; ``torchrun --nproc_per_node N -m cfs bench ...``
runs one run on N processes (:mod:`cfs.engine.distributed`; the process group starts with the
first run and is torn down here)."""

import sys

from cfs.cli import main


def _main() -> int:
    from cfs.engine import distributed

    try:
        return main()
    finally:
        distributed.shutdown()


sys.exit(_main())
