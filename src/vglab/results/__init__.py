"""What is kept: atomic result tables per run, loaded into pandas."""
from vglab.results.store import Results, StoreError, load

__all__ = ["Results", "StoreError", "load"]
