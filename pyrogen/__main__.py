"""``python -m pyrogen``: the ``pyrogen`` command, so that ``torchrun -m pyrogen compare ...``
launches it on every process."""

import sys

from pyrogen.cli import main

sys.exit(main())
