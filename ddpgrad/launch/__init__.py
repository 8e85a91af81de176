"""``ddprun``: start a ddpgrad script on N MPI ranks, on one machine or several.

    ddprun -n 4 train.py --epochs 5          # or: python -m ddpgrad.launch -n 4 train.py ...

The command line lives in ``cli``; this package file imports nothing, because the distributed
layer reads the launcher's variables from ``environment`` and must not pull the CLI in with them.
"""
