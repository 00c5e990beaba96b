"""medsure's benchmarks: scripts run by hand (``python benchmarks/<name>.py``) and, for the quick
subset each one exposes, ``python -m benchmarks.check`` (see benchmarks/README.md)."""
