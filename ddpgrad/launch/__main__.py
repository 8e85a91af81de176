"""``python -m ddpgrad.launch``: the same as the ``ddprun`` command."""

import sys

from .cli import main

sys.exit(main())
