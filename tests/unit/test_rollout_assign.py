"""Sticky assignment: GrowthBook's published hash values, exact splits, and users moving only from champion to
challenger as the weight grows."""

from __future__ import annotations

import random

import pytest

from loopline.rollout.assign import assign, bucket, fnv1a32, user_hash

pytestmark = pytest.mark.unit

# GrowthBook's shared SDK test cases, packages/sdk-js/test/cases.json in github.com/growthbook/growthbook
# ("hash": [seed, value, version, expected], the version-2 rows), which every GrowthBook SDK must pass.
GROWTHBOOK_HASH_V2 = [
    ("seed", "a", 0.0505),
    ("seed", "b", 0.2696),
    ("foo", "ab", 0.2575),
    ("foo", "def", 0.2019),
    ("89123klj", "8952klfjas09ujkasdf", 0.124),
    ("90850943850283058242805", "123", 0.7516),
    ("()**(%$##$%#$#", '___)((*":&', 0.0128),
    # the same file's "feature" cases "Support passthrough variations" and "Support holdout groups": with
    # hashVersion 2 the seed defaults to the experiment key and the result's bucket is the hash of id "1"
    ("experiment", "1", 0.4413),
    ("holdout", "1", 0.8043),
]


@pytest.mark.parametrize(("seed", "value", "expected"), GROWTHBOOK_HASH_V2)
def test_bucket_matches_growthbook_hash_version_2(seed: str, value: str, expected: float) -> None:
    assert bucket(seed, value) == expected


@pytest.mark.parametrize(
    ("seed", "value", "expected"),
    # computed with the SDK's own hash() (packages/sdk-js/src/util.ts) under Node: charCodeAt reads
    # UTF-16 code units, so a key outside ASCII (and one outside the BMP: a surrogate pair) must match it
    [("exp-1", "üser-é", 0.3426), ("s", "日本語", 0.1943), ("seed", "😀x", 0.6751)],
)
def test_bucket_reads_non_ascii_keys_as_javascript_does(seed: str, value: str, expected: float) -> None:
    assert bucket(seed, value) == expected


def test_fnv1a32_is_the_standard_32_bit_fnv_1a() -> None:
    # reference vectors of the FNV specification (draft-eastlake-fnv): "" and "a", "foobar"
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


def test_assignment_is_sticky_and_the_split_follows_the_weight() -> None:
    keys = [f"user-{i}" for i in range(20_000)]
    first = [assign("exp-7", k, 0.3) for k in keys]
    assert first == [assign("exp-7", k, 0.3) for k in keys]
    share = first.count("challenger") / len(keys)
    assert 0.29 < share < 0.31
    assert all(assign("exp-7", k, 0.0) == "champion" for k in keys[:2000])
    assert all(assign("exp-7", k, 1.0) == "challenger" for k in keys[:2000])


def test_another_seed_reshuffles_users() -> None:
    keys = [f"user-{i}" for i in range(5000)]
    a = {k for k in keys if assign("exp-a", k, 0.5) == "challenger"}
    b = {k for k in keys if assign("exp-b", k, 0.5) == "challenger"}
    overlap = len(a & b) / len(a)
    assert 0.45 < overlap < 0.55  # independent experiments: about half of one arm is in the other's


def test_as_the_weight_grows_users_move_only_from_champion_to_challenger() -> None:
    rng = random.Random(11)
    for trial in range(200):
        seed = f"seed-{trial}"
        keys = [f"{rng.getrandbits(64):x}" for _ in range(200)]
        weights = [*sorted(rng.random() for _ in range(rng.randint(2, 8))), 1.0]
        previous: dict[str, str] = dict.fromkeys(keys, "champion")
        for weight in [0.0, *weights]:
            current: dict[str, str] = {k: assign(seed, k, weight) for k in keys}
            back = [k for k in keys if previous[k] == "challenger" and current[k] == "champion"]
            assert not back, f"seed {seed}: {len(back)} users went back to the champion at weight {weight}"
            previous = current
        assert set(previous.values()) == {"challenger"}


def test_user_hash_is_short_keyed_by_the_seed_and_never_the_key() -> None:
    hashed = user_hash("exp-7", "alice@example.com")
    assert len(hashed) == 16 and int(hashed, 16) >= 0
    assert "alice" not in hashed
    assert hashed == user_hash("exp-7", "alice@example.com") != user_hash("exp-8", "alice@example.com")
