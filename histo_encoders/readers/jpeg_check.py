"""What libjpeg would warn about while decoding a JPEG tile: the TIFF reader's verdict on a tile
is OpenSlide's.

OpenSlide turns every libjpeg warning into an error, so it refuses a tile whose compressed data
ends before the last block ("premature end of data segment"), holds a marker inside the scan,
lacks its end-of-image marker, or declares scan parameters a sequential decoder cannot use.
imagecodecs decodes with the same libjpeg-turbo but drops its warnings and returns grey or
garbage pixels. :func:`jpeg_warning` reads the tile the way libjpeg-turbo's decoder does (the
marker reader, the default Huffman tables, the bit reader with its fast and slow paths,
restart markers) without computing a single pixel, and says which warning libjpeg would give.
Fatal libjpeg errors need no emulation: imagecodecs raises those itself.

Only what an 8-bit baseline or extended-sequential Huffman JPEG with one interleaved scan can
contain is verified (every Aperio and generic-TIFF slide seen so far); anything else (12-bit,
progressive, lossless, arithmetic coding, several scans) is answered :data:`UNVERIFIED`, and
the reader refuses such a tile rather than guess.

The reference is the decoder of libjpeg-turbo 3 (``jdmarker.c``, ``jdhuff.c``, ``jdhuff.h``,
``jdapimin.c``) as OpenSlide 4 and imagecodecs use it, on a 64-bit build (57-bit refills), and
ITU-T T.81 Annex K for the default tables. ``tests/faults/test_jpeg_parity.py`` holds it to
OpenSlide's verdicts on a corpus of damaged tiles.
"""

from __future__ import annotations

import numpy as np

from histo_encoders.readers.jpeg_markers import (
    BAD_HUFFMAN_CODE,
    DEFAULT_COUNTS,
    DEFAULT_VALUES,
    HIT_MARKER,
    MALFORMED,
    MESSAGES,
    MUST_RESYNC,
    OK,
    PREMATURE_EOF,
    UNVERIFIED,
    _check_frame,
    _next_marker,
    _read_markers,
)
from histo_encoders.readers.kernels import compiled

__all__ = ["MESSAGES", "OK", "UNVERIFIED", "jpeg_warning"]

_MIN_GET_BITS = 57  # libjpeg-turbo on 64-bit builds: BIT_BUF_SIZE - 7
_LOOKAHEAD = 8  # HUFF_LOOKAHEAD
_FAST_BYTES_PER_BLOCK = 512  # BUFSIZE (DCTSIZE2 * 8): the fast path needs this much input left
_MAX_BLOCKS_IN_MCU = 10

_EMPTY = np.frombuffer(b"", np.uint8)  # read-only, like tiles from bytes: one compiled type


def jpeg_warning(data: bytes, tables: bytes | None = None) -> int:
    """The libjpeg warning decoding ``data`` (after the shared ``tables``) would give.

    Returns :data:`OK` (0) or one of the codes above (:data:`MESSAGES` says them in words).
    Compiled: releases the GIL, so the reader's threads check tiles in parallel.
    """
    tile = np.frombuffer(data, np.uint8)
    shared = _EMPTY if tables is None else np.frombuffer(tables, np.uint8)
    return int(_check(shared, tile, DEFAULT_COUNTS, DEFAULT_VALUES))


# --- the compiled reader ------------------------------------------------------------------


@compiled()
def _check(tables, data, default_counts, default_values):
    counts = np.zeros((8, 17), np.int64)
    values = np.zeros((8, 256), np.int64)
    defined = np.zeros(8, np.bool_)
    state = np.zeros(11, np.int64)
    components = np.zeros((4, 3), np.int64)
    scan = np.zeros((4, 3), np.int64)
    params = np.zeros(5, np.int64)
    if tables.shape[0] > 0:
        code, reached, _ = _read_markers(
            tables, counts, values, defined, state, components, scan, params
        )
        if code != OK:
            return code
        if reached != 2:  # an image inside the tables: not what a TIFF writes
            return UNVERIFIED
    state[:] = 0
    code, reached, position = _read_markers(
        data, counts, values, defined, state, components, scan, params
    )
    if code != OK:
        return code
    if reached != 1:
        return MALFORMED  # no image in the tile (libjpeg: JERR_NO_IMAGE)
    code = _check_frame(state, params)
    if code != OK:
        return code
    for slot in range(4):  # std_huff_tables: defaults where the stream defines none
        for kind in range(2):
            table = kind * 4 + slot
            if slot < 2 and not defined[table]:
                counts[table, 1:] = default_counts[kind * 2 + slot]
                values[table] = default_values[kind * 2 + slot]
                defined[table] = True
    return _decode_scan(data, position, counts, values, defined, state, components, scan, params)


@compiled()
def _derive(counts, values, is_dc, lookup, maxcode, valoffset):
    """jpeg_make_d_derived_tbl: False where libjpeg refuses the table (JERR_BAD_HUFF_TABLE)."""
    sizes = np.zeros(257, np.int64)
    codes = np.zeros(257, np.int64)
    p = 0
    for length in range(1, 17):
        count = counts[length]
        if p + count > 256:
            return False
        for _ in range(count):
            sizes[p] = length
            p += 1
    sizes[p] = 0
    symbols = p
    code = 0
    si = sizes[0]
    p = 0
    while sizes[p] != 0:
        while sizes[p] == si:
            codes[p] = code
            p += 1
            code += 1
        if code >= (np.int64(1) << si):
            return False
        code <<= 1
        si += 1
    p = 0
    for length in range(1, 17):
        if counts[length] != 0:
            valoffset[length] = p - codes[p]
            p += counts[length]
            maxcode[length] = codes[p - 1]
        else:
            maxcode[length] = -1
    valoffset[17] = 0
    maxcode[17] = 0xFFFFF
    lookup[:] = (_LOOKAHEAD + 1) << _LOOKAHEAD
    p = 0
    for length in range(1, _LOOKAHEAD + 1):
        for _ in range(counts[length]):
            bits = codes[p] << (_LOOKAHEAD - length)
            for _ in range(1 << (_LOOKAHEAD - length)):
                lookup[bits] = (length << _LOOKAHEAD) | values[p]
                bits += 1
            p += 1
    if is_dc:
        for i in range(symbols):
            if values[i] > 15:
                return False
    return True


@compiled(inline="always")
def _fill(data, size, position, buffer, bits, marker, needed):
    """jpeg_fill_bit_buffer: (code, position, buffer, bits, marker)."""
    if marker == 0:
        while bits < _MIN_GET_BITS:
            if position >= size:
                return PREMATURE_EOF, position, buffer, bits, marker
            c = np.int64(data[position])
            position += 1
            if c == 0xFF:
                while c == 0xFF:
                    if position >= size:
                        return PREMATURE_EOF, position, buffer, bits, marker
                    c = np.int64(data[position])
                    position += 1
                if c != 0:
                    marker = c
                    break
                c = 0xFF
            buffer = (buffer << 8) | c
            bits += 8
    if marker != 0 and needed > bits:
        return HIT_MARKER, position, buffer, bits, marker
    return OK, position, buffer, bits, marker


@compiled()
def _slow_mcu(
    data,
    position,
    buffer,
    bits,
    marker,
    blocks,
    block_dc,
    block_ac,
    lookups,
    maxcodes,
    offsets,
    values,
):
    """decode_mcu_slow: one MCU with HUFF_DECODE, jpeg_huff_decode and CHECK_BIT_BUFFER.

    Returns (code, position, buffer, bits, marker); the code is the first warning libjpeg gives
    (running out of data after a marker, a bad Huffman code, the stream's end).
    """
    size = data.shape[0]
    for block in range(blocks):
        for kind in range(2):
            table = block_dc[block] if kind == 0 else block_ac[block]
            k = 1
            while k < 64:
                # HUFF_DECODE: peek 8 bits if there are 8, else the bit-by-bit decode
                length = 1
                if bits < _LOOKAHEAD:
                    code, position, buffer, bits, marker = _fill(
                        data, size, position, buffer, bits, marker, 0
                    )
                    if code != OK:
                        return code, position, buffer, bits, marker
                symbol = -1
                if bits >= _LOOKAHEAD:
                    entry = lookups[table, (buffer >> (bits - _LOOKAHEAD)) & 0xFF]
                    length = entry >> _LOOKAHEAD
                    if length <= _LOOKAHEAD:
                        bits -= length
                        symbol = entry & 0xFF
                if symbol < 0:  # jpeg_huff_decode, from ``length`` bits on
                    if bits < length:
                        code, position, buffer, bits, marker = _fill(
                            data, size, position, buffer, bits, marker, length
                        )
                        if code != OK:
                            return code, position, buffer, bits, marker
                    bits -= length
                    value = (buffer >> bits) & ((np.int64(1) << length) - 1)
                    while value > maxcodes[table, length]:
                        if bits < 1:
                            code, position, buffer, bits, marker = _fill(
                                data, size, position, buffer, bits, marker, 1
                            )
                            if code != OK:
                                return code, position, buffer, bits, marker
                        bits -= 1
                        value = (value << 1) | ((buffer >> bits) & 1)
                        length += 1
                    if length > 16:
                        return BAD_HUFFMAN_CODE, position, buffer, bits, marker
                    symbol = values[table, (value + offsets[table, length]) & 0xFF]
                extra = symbol if kind == 0 else symbol & 15
                if extra != 0:  # CHECK_BIT_BUFFER, then the coefficient's bits
                    if bits < extra:
                        code, position, buffer, bits, marker = _fill(
                            data, size, position, buffer, bits, marker, extra
                        )
                        if code != OK:
                            return code, position, buffer, bits, marker
                    bits -= extra
                if kind == 0:
                    break
                k = _next_index(k, symbol, extra)
    return OK, position, buffer, bits, marker


@compiled(inline="always")
def _next_index(k, symbol, extra):
    """The coefficient index after AC ``symbol`` (run in its high nibble); 64 ends the block:
    an end-of-block (run below 15, no bits) or the last coefficient."""
    run = symbol >> 4
    if extra != 0:
        return k + run + 1
    if run != 15:
        return 64
    return k + 16


@compiled(inline="always")
def _fill_fast(data, size, position, buffer, bits, marker):
    """FILL_BIT_BUFFER_FAST: six GET_BYTEs, a marker read as zero bytes and not consumed.

    Returns (position, buffer, bits, marker). Inlined where it is called (numba's IR inlining):
    the fast MCU loop pays no call for it.
    """
    for _ in range(6):
        c0 = np.int64(data[position]) if position < size else 0
        position += 1
        c1 = np.int64(data[position]) if position < size else 0
        buffer = (buffer << 8) | c0
        bits += 8
        if c0 == 0xFF:
            position += 1
            if c1 != 0:
                marker = c1
                position -= 2
                buffer &= ~np.int64(0xFF)
    return position, buffer, bits, marker


@compiled()
def _fast_mcu(
    data, position, buffer, bits, blocks, block_dc, block_ac, lookups, maxcodes, offsets, values
):
    """decode_mcu_fast: one MCU with HUFF_DECODE_FAST and FILL_BIT_BUFFER_FAST.

    Returns (position, buffer, bits, marker met). A code longer than 16 bits reads as 0 with no
    warning here; a marker reads as zero bytes without being consumed, and a nonzero marker
    tells the caller to decode the MCU again with the slow path, as libjpeg does. This is where
    the check spends its time: the bit-buffer refill is inlined, not called.
    """
    size = data.shape[0]
    marker = 0
    for block in range(blocks):
        for kind in range(2):
            table = block_dc[block] if kind == 0 else block_ac[block]
            k = 1
            while k < 64:
                if bits <= 16:
                    position, buffer, bits, marker = _fill_fast(
                        data, size, position, buffer, bits, marker
                    )
                entry = lookups[table, (buffer >> (bits - _LOOKAHEAD)) & 0xFF]
                length = entry >> _LOOKAHEAD
                bits -= length
                symbol = entry & 0xFF
                if length > _LOOKAHEAD:
                    value = (buffer >> bits) & ((np.int64(1) << length) - 1)
                    while value > maxcodes[table, length]:
                        bits -= 1
                        value = (value << 1) | ((buffer >> bits) & 1)
                        length += 1
                    symbol = (
                        0 if length > 16 else values[table, (value + offsets[table, length]) & 0xFF]
                    )
                extra = symbol if kind == 0 else symbol & 15
                if extra != 0:
                    if bits <= 16:
                        position, buffer, bits, marker = _fill_fast(
                            data, size, position, buffer, bits, marker
                        )
                    bits -= extra
                if kind == 0:
                    break
                k = _next_index(k, symbol, extra)
    return position, buffer, bits, marker


@compiled()
def _decode_scan(data, position, counts, values, defined, state, components, scan, params):
    """Entropy-decode every MCU of the scan the way decode_mcu does; the first warning wins."""
    size = data.shape[0]
    n_scan = params[0]
    lookups = np.zeros((8, 256), np.int64)
    maxcodes = np.zeros((8, 18), np.int64)
    offsets = np.zeros((8, 18), np.int64)
    for i in range(n_scan):
        for kind in range(2):
            slot = scan[i, 1 + kind]
            if slot >= 4:
                return MALFORMED  # JERR_NO_HUFF_TABLE
            table = kind * 4 + slot
            if not defined[table]:
                return MALFORMED
            if not _derive(
                counts[table], values[table], kind == 0, lookups[table], maxcodes[table],
                offsets[table],
            ):  # fmt: skip
                return MALFORMED
    # MCU geometry (jdinput.c per_scan_setup).
    max_h, max_v = 1, 1
    for ci in range(state[10]):
        if not (1 <= components[ci, 1] <= 4 and 1 <= components[ci, 2] <= 4):
            return MALFORMED  # JERR_BAD_SAMPLING
        max_h = max(max_h, components[ci, 1])
        max_v = max(max_v, components[ci, 2])
    height, width = state[8], state[9]
    block_dc = np.zeros(_MAX_BLOCKS_IN_MCU, np.int64)
    block_ac = np.zeros(_MAX_BLOCKS_IN_MCU, np.int64)
    if n_scan == 1:
        ci = scan[0, 0]
        across = -(-width * components[ci, 1] // (max_h * 8))
        down = -(-height * components[ci, 2] // (max_v * 8))
        mcus = across * down
        blocks = 1
        block_dc[0] = scan[0, 1]
        block_ac[0] = 4 + scan[0, 2]
    else:
        mcus = -(-width // (max_h * 8)) * -(-height // (max_v * 8))
        blocks = 0
        for i in range(n_scan):
            ci = scan[i, 0]
            for _ in range(components[ci, 1] * components[ci, 2]):
                if blocks >= _MAX_BLOCKS_IN_MCU:
                    return MALFORMED  # JERR_BAD_MCU_SIZE
                block_dc[blocks] = scan[i, 1]
                block_ac[blocks] = 4 + scan[i, 2]
                blocks += 1
    interval = state[0]
    restarts_to_go = interval
    next_restart = 0
    discarded = 0
    buffer = np.int64(0)
    bits = 0
    marker = 0
    for _ in range(mcus):
        if interval != 0 and restarts_to_go == 0:
            # process_restart + read_restart_marker
            discarded += bits // 8
            bits = 0
            if marker == 0:
                code, marker, position, discarded = _next_marker(data, position, discarded)
                if code != OK:
                    return code
            if marker != 0xD0 + next_restart:
                return MUST_RESYNC
            marker = 0
            next_restart = (next_restart + 1) & 7
            restarts_to_go = interval
        fast = interval == 0 and marker == 0 and size - position >= _FAST_BYTES_PER_BLOCK * blocks
        if fast:
            p, b, n, m = _fast_mcu(
                data, position, buffer, bits, blocks, block_dc, block_ac, lookups, maxcodes,
                offsets, values,
            )  # fmt: skip
            if m == 0:  # no marker met: the fast path's result stands
                position, buffer, bits = p, b, n
                restarts_to_go -= 1
                continue
        # decode_mcu_slow (also where the fast path met a marker)
        code, position, buffer, bits, marker = _slow_mcu(
            data, position, buffer, bits, marker, blocks, block_dc, block_ac, lookups,
            maxcodes, offsets, values,
        )  # fmt: skip
        if code != OK:
            return code
        restarts_to_go -= 1
    return OK
