import pytest

from loopline.data.dedupe import hamming, near_duplicate_groups

pytestmark = pytest.mark.unit


def test_hamming_counts_differing_bits() -> None:
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def test_threshold_decides_what_is_near() -> None:
    base = 0xF0F0F0F0F0F0F0F0
    three_off = base ^ 0b111
    far = ~base & (2**64 - 1)
    hashes = [base, three_off, far]
    assert near_duplicate_groups(hashes, threshold=2) == []
    assert near_duplicate_groups(hashes, threshold=3) == [[0, 1]]
    assert near_duplicate_groups(hashes, threshold=64) == [[0, 1, 2]]
    assert near_duplicate_groups(hashes, threshold=-1) == []


def test_groups_are_transitive_across_blocks() -> None:
    # a-b within 2 bits, b-c within 2 bits, a-c 4 bits apart: single linkage puts all three together,
    # even when the comparisons fall into different numpy blocks.
    a = 0
    b = 0b11
    c = 0b1111
    unrelated = [((i * 0x9E3779B97F4A7C15) & (2**64 - 1)) | (1 << 63) for i in range(1, 6)]
    hashes = [a, *unrelated, b, c]
    assert near_duplicate_groups(hashes, threshold=2, block=2) == [[0, 6, 7]]
