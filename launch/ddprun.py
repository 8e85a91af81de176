#!/usr/bin/env python3
"""``ddprun`` from a clone: the same as the ``ddprun`` command that ``pip install ddpgrad`` puts on
PATH (and ``python -m ddpgrad.launch``). Run ``python launch/ddprun.py --help``; see README.md here.

    python launch/ddprun.py -n 4 examples/train_mlp.py --epochs 5
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the clone's ddpgrad

from ddpgrad.launch.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
