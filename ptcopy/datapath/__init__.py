"""Data paths: how a set's volumes reach applications (see base.py)."""
