"""``python -m mtlzoo`` (and ``torchrun -m mtlzoo``) runs the ``mtlzoo`` command."""

import sys

from .apps.cli import main

sys.exit(main())
