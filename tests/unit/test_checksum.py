"""The checksum kept with a slice: CRC-32 over the chunks as they pass, equal to that of their join."""

from __future__ import annotations

import os
import random
import zlib
from pathlib import Path

import pytest

from proxy.cache.checksum import Crc32, crc_of, file_crc


@pytest.mark.parametrize("cuts", [[], [0], [1], [7, 7, 100], [65536, 1, 3 * 65536]])
def test_crc_over_chunks_is_the_crc_of_their_join(cuts: list[int]) -> None:
    data = random.Random(5).randbytes(sum(cuts) + 11)
    chunks, at = [], 0
    for n in cuts + [11]:
        chunks.append(data[at:at + n])
        at += n
    crc = Crc32(chunks)
    assert b"".join(crc) == data  # passed through unchanged, in order
    assert crc.value == zlib.crc32(data) == crc_of(chunks)
    assert crc.size == len(data)


def test_one_flipped_bit_changes_the_crc() -> None:
    data = bytearray(random.Random(6).randbytes(4096))
    before = crc_of([bytes(data)])
    data[1234] ^= 0x10
    assert crc_of([bytes(data)]) != before


def test_file_crc_reads_the_whole_file_from_offset_0(tmp_path: Path) -> None:
    data = random.Random(7).randbytes(3 * 1000 + 17)
    p = tmp_path / "f"
    p.write_bytes(data)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.lseek(fd, 100, os.SEEK_SET)  # the fd's offset does not matter (pread)
        assert file_crc(fd, bytearray(1000)) == (len(data), zlib.crc32(data))
    finally:
        os.close(fd)
    (tmp_path / "empty").write_bytes(b"")
    fd = os.open(tmp_path / "empty", os.O_RDONLY)
    try:
        assert file_crc(fd) == (0, 0)
    finally:
        os.close(fd)
