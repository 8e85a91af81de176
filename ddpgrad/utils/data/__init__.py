"""Datasets, samplers and the DataLoader (``ddpgrad.utils.data``)."""
