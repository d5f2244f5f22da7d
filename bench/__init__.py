"""The speed benchmark: one module per measurement, run by bench/run.py (bench/README.md)."""
