"""What is kept: atomic result tables per run, loaded into pandas."""
from vglab.results.store import Results, StoreError, load, load_many

__all__ = ["Results", "StoreError", "load", "load_many"]
