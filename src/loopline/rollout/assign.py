"""Sticky assignment of users to the champion or the challenger: pure, deterministic, reproducible anywhere.

The scheme is GrowthBook's hashing version 2 (``hash(seed, value, 2)`` in the GrowthBook SDKs; JavaScript:
``packages/sdk-js/src/util.ts``), so any of its SDKs (JavaScript, Python, Go, Java, ...) computes the same
bucket for the same user:

    bucket(seed, key) = (fnv1a32(str(fnv1a32(seed + key))) mod 10000) / 10000      in [0, 1)

where ``fnv1a32`` is 32-bit FNV-1a (offset basis 2166136261, prime 16777619) over the string's UTF-16 code
units (JavaScript's ``charCodeAt``; the same as its bytes for ASCII keys), and ``str`` writes the first hash
in decimal. Hashing twice removes the bias of version 1 (``fnv1a32(key + seed) mod 1000``), where keys
differing only in their last character landed in neighbouring buckets.

A user is in the challenger's arm when ``bucket < weight`` (GrowthBook's range ``[0, weight)``). So the
split is exact to 1/10000, the experiment's seed decorrelates experiments, and as the weight grows the
challenger's range only widens: users move from champion to challenger, never back, and a user keeps the
arm they had at every step until the weight moves past their bucket.
"""

from __future__ import annotations

import hashlib

from loopline.rollout.events import Variant

FNV32_OFFSET_BASIS = 0x811C9DC5
FNV32_PRIME = 0x01000193
BUCKETS = 10_000
USER_HASH_CHARS = 16  # hex characters of sha256 kept in the event rows: 64 bits, never the key itself


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a of ``text``'s UTF-16 code units, as JavaScript's ``charCodeAt`` reads them."""
    value = FNV32_OFFSET_BASIS
    if text.isascii():
        units: bytes | list[int] = text.encode("ascii")
    else:
        raw = text.encode("utf-16-le")
        units = [raw[i] | raw[i + 1] << 8 for i in range(0, len(raw), 2)]
    for unit in units:
        value = ((value ^ unit) * FNV32_PRIME) & 0xFFFFFFFF
    return value


def bucket(seed: str, key: str) -> float:
    """The user's place in [0, 1): GrowthBook's hash version 2 of ``key`` under ``seed``."""
    return (fnv1a32(str(fnv1a32(seed + key))) % BUCKETS) / BUCKETS


def assign(seed: str, key: str, weight: float) -> Variant:
    """``challenger`` when the user's bucket falls under the challenger's ``weight`` (0..1), else
    ``champion``: the same answer for the same user at the same weight, every time, on every replica."""
    return "challenger" if bucket(seed, key) < weight else "champion"


def user_hash(seed: str, key: str) -> str:
    """What the event rows keep of a user key: a truncated sha256 of seed + key (joinable within one
    experiment, not across experiments, and never the key)."""
    return hashlib.sha256((seed + key).encode()).hexdigest()[:USER_HASH_CHARS]
