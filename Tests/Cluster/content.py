"""The known content of the cluster test: every response body is a pure function of its request id.

server.py sends it, clients.py computes the same bytes independently to know what to expect, so a
body that arrives mixed with another connection's bytes, shifted, truncated or corrupted has the
wrong digest.
"""
import hashlib
import random


def body(identifier: str, size: int) -> bytes:
    """`size` pseudo-random bytes seeded by `identifier` (the same on every run and machine)."""
    return random.Random("switchyard-cluster:" + identifier).randbytes(size)


def digest(identifier: str, size: int) -> str:
    return hashlib.sha256(body(identifier, size)).hexdigest()
