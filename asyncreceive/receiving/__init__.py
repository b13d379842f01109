"""Getting paid: releasing held HTLCs, claiming async HTLCs and online-fallback ones (pure HTLC checks in htlc.py)."""
