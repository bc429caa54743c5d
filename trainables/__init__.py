"""Data plane of cpsweep: the method (rotation, criteria, recipes), data, models and training loops.

Runs inside trials and on Ray Train workers; never imports `service`.
"""
