"""Base detectors behind one contract (see base.py)."""
