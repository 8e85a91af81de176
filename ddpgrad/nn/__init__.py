"""Neural-network layers, losses and initialisers (``ddpgrad.nn``)."""
