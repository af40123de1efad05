"""Fixed-width bit packing of docs/FORMAT.md §4: index i occupies stream bits [i*b, (i+1)*b),
least significant bit first, and stream bit t is bit (t % 8) of byte t // 8."""

from __future__ import annotations

import numpy as np

_CHUNK = 1 << 20  # indices per step; a multiple of 8, so every chunk starts on a byte boundary


def packed_size(count: int, bits: int) -> int:
    return (count * bits + 7) // 8


def pack(indices: np.ndarray, bits: int) -> np.ndarray:
    """Pack non-negative integers < 2**bits (bits <= 24) into a uint8 stream; padding bits are 0."""
    indices = np.asarray(indices).ravel()
    size = packed_size(indices.size, bits)
    out = np.empty(size, dtype=np.uint8)
    # Eight indices fill exactly `bits` bytes: OR them into three little-endian 64-bit words
    # (8 * 24 bits at most) and keep the words' first `bits` bytes.
    for start in range(0, indices.size, _CHUNK):
        chunk = indices[start:start + _CHUNK].astype(np.uint64)
        chunk = np.concatenate([chunk, np.zeros(-chunk.size % 8, np.uint64)]).reshape(-1, 8).T.copy()
        words = np.zeros((3, chunk.shape[1]), dtype=np.uint64)
        for k in range(8):
            word, shift = divmod(k * bits, 64)
            words[word] |= chunk[k] << np.uint64(shift)
            if shift + bits > 64:
                words[word + 1] |= chunk[k] >> np.uint64(64 - shift)
        packed = np.ascontiguousarray(words.T, dtype="<u8").view(np.uint8).reshape(-1, 24)[:, :bits].ravel()
        first = start * bits // 8
        out[first:first + packed.size] = packed[:size - first]
    return out


def unpack(payload: np.ndarray, bits: int, count: int) -> np.ndarray:
    """Inverse of `pack`: the first `count` indices of a stream, as uint32."""
    if payload.size < packed_size(count, bits):
        raise ValueError("packed stream is shorter than count * bits")
    padded = np.concatenate([np.asarray(payload, dtype=np.uint8), np.zeros(4, dtype=np.uint8)])
    padded = padded.astype(np.uint32)
    mask = np.uint32((1 << bits) - 1)
    out = np.empty(count, dtype=np.uint32)
    for start in range(0, count, _CHUNK):
        stop = min(count, start + _CHUNK)
        bit_pos = np.arange(start, stop, dtype=np.int64) * bits
        byte_pos = bit_pos >> 3
        window = (padded[byte_pos] | (padded[byte_pos + 1] << 8) | (padded[byte_pos + 2] << 16)
                  | (padded[byte_pos + 3] << 24))
        out[start:stop] = (window >> (bit_pos & 7).astype(np.uint32)) & mask
    return out
