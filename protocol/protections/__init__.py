"""Protection levels other than ``none`` (which lives in :mod:`fedrx.protocol.protection`)."""
