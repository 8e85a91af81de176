"""Optimizers and learning-rate schedules (``ddpgrad.optim``)."""
