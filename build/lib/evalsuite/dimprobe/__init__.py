"""dim-probe: which algebra components carry which linguistic categories (see probe.py)."""
