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

from histo_encoders.readers.kernels import compiled

OK = 0
EXTRANEOUS_DATA = 1  # JWRN_EXTRANEOUS_DATA: bytes before a marker
HIT_MARKER = 2  # JWRN_HIT_MARKER: compressed data ends before the last block
BAD_HUFFMAN_CODE = 3  # JWRN_HUFF_BAD_CODE
PREMATURE_EOF = 4  # JWRN_JPEG_EOF: the stream ends without a marker
MUST_RESYNC = 5  # JWRN_MUST_RESYNC: restart markers out of sequence
NOT_SEQUENTIAL = 6  # JWRN_NOT_SEQUENTIAL: scan parameters a sequential decoder cannot use
JFIF_MAJOR = 7  # JWRN_JFIF_MAJOR
ADOBE_TRANSFORM = 8  # JWRN_ADOBE_XFORM
UNVERIFIED = 9  # a JPEG process or layout not verified here
MALFORMED = 10  # a structure libjpeg itself refuses (imagecodecs raises it too)

MESSAGES = {
    EXTRANEOUS_DATA: "corrupt JPEG data: extraneous bytes before a marker",
    HIT_MARKER: (
        "corrupt JPEG data: the compressed scan ends before the last block (a truncated scan, "
        "or a damaged marker inside it)"
    ),
    BAD_HUFFMAN_CODE: "corrupt JPEG data: bad Huffman code",
    PREMATURE_EOF: "tile data is truncated (premature end of JPEG data: no end-of-image marker)",
    MUST_RESYNC: "corrupt JPEG data: restart markers out of sequence",
    NOT_SEQUENTIAL: "invalid scan parameters for sequential JPEG",
    JFIF_MAJOR: "the JFIF header has an unknown major version",
    ADOBE_TRANSFORM: "the Adobe header has an unknown colour transform",
    UNVERIFIED: (
        "a JPEG process this reader does not verify (only 8-bit baseline or extended "
        "sequential Huffman coding in one scan is)"
    ),
    MALFORMED: "malformed JPEG structure",
}

_MIN_GET_BITS = 57  # libjpeg-turbo on 64-bit builds: BIT_BUF_SIZE - 7
_LOOKAHEAD = 8  # HUFF_LOOKAHEAD
_FAST_BYTES_PER_BLOCK = 512  # BUFSIZE (DCTSIZE2 * 8): the fast path needs this much input left
_MAX_BLOCKS_IN_MCU = 10

# ITU-T T.81 Annex K.3 (tables K.3 to K.6): the default Huffman tables libjpeg installs for
# table slots 0 and 1 a stream leaves undefined (std_huff_tables). Row: 16 code counts, values.
_DEFAULT_COUNTS = np.array(
    [
        [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],  # DC luminance
        [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # DC chrominance
        [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 125],  # AC luminance
        [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 119],  # AC chrominance
    ],
    dtype=np.int64,
)
_AC_LUMINANCE = bytes.fromhex(
    "01020300041105122131410613516107227114328191a1082342b1c11552d1f02433627282090a161718191a"
    "25262728292a3435363738393a434445464748494a535455565758595a636465666768696a737475767778797a"
    "838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7c8c9ca"
    "d2d3d4d5d6d7d8d9dae1e2e3e4e5e6e7e8e9eaf1f2f3f4f5f6f7f8f9fa"
)
_AC_CHROMINANCE = bytes.fromhex(
    "000102031104052131061241510761711322328108144291a1b1c109233352f0156272d10a162434e125f117"
    "18191a262728292a35363738393a434445464748494a535455565758595a636465666768696a737475767778"
    "797a82838485868788898a92939495969798999aa2a3a4a5a6a7a8a9aab2b3b4b5b6b7b8b9bac2c3c4c5c6c7"
    "c8c9cad2d3d4d5d6d7d8d9dae2e3e4e5e6e7e8e9eaf2f3f4f5f6f7f8f9fa"
)
_DEFAULT_VALUES = np.zeros((4, 256), dtype=np.int64)
_DEFAULT_VALUES[0, :12] = np.arange(12)
_DEFAULT_VALUES[1, :12] = np.arange(12)
_DEFAULT_VALUES[2, :162] = np.frombuffer(_AC_LUMINANCE, np.uint8)
_DEFAULT_VALUES[3, :162] = np.frombuffer(_AC_CHROMINANCE, np.uint8)
_EMPTY = np.frombuffer(b"", np.uint8)  # read-only, like tiles from bytes: one compiled type
_JFIF = np.frombuffer(b"JFIF\0", np.uint8)  # APP0 identifiers libjpeg looks for
_ADOBE = np.frombuffer(b"Adobe", np.uint8)


def jpeg_warning(data: bytes, tables: bytes | None = None) -> int:
    """The libjpeg warning decoding ``data`` (after the shared ``tables``) would give.

    Returns :data:`OK` (0) or one of the codes above (:data:`MESSAGES` says them in words).
    Compiled: releases the GIL, so the reader's threads check tiles in parallel.
    """
    tile = np.frombuffer(data, np.uint8)
    shared = _EMPTY if tables is None else np.frombuffer(tables, np.uint8)
    return int(_check(shared, tile, _DEFAULT_COUNTS, _DEFAULT_VALUES))


# --- the compiled reader ------------------------------------------------------------------
# Table slots: DC tables 0-3, AC tables 4-7. ``stream`` state: [restart interval, saw JFIF,
# JFIF major version, saw Adobe, Adobe transform, saw SOF, SOF marker, precision, height,
# width, components]; ``components``: rows of (id, h, v); ``scan``: rows of (component row,
# DC table, AC table); ``scan_params``: [components in scan, Ss, Se, Ah, Al].


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
def _check_frame(state, params):
    """default_decompress_parms' and start_pass' warnings, and what is not verified here."""
    sof, precision, n_components = state[6], state[7], state[10]
    if sof != 0xC0 and sof != 0xC1:
        return UNVERIFIED  # progressive, arithmetic, lossless, hierarchical
    if precision != 8:
        return UNVERIFIED  # OpenSlide's 8-bit decoder refuses other precisions
    if n_components == 3 and state[1] == 0 and state[3] == 1 and state[4] not in (0, 1):
        return ADOBE_TRANSFORM
    if n_components == 4 and state[3] == 1 and state[4] not in (0, 2):
        return ADOBE_TRANSFORM
    if params[0] != n_components:
        return UNVERIFIED  # several scans: libjpeg buffers the whole image
    if params[1] != 0 or params[2] != 63 or params[3] != 0 or params[4] != 0:
        return NOT_SEQUENTIAL
    return OK


@compiled()
def _next_marker(data, position, discarded):
    """libjpeg's next_marker: (code, marker, position after it, discarded bytes left)."""
    size = data.shape[0]
    while True:
        if position >= size:
            return PREMATURE_EOF, 0, position, discarded
        c = data[position]
        position += 1
        while c != 0xFF:
            discarded += 1
            if position >= size:
                return PREMATURE_EOF, 0, position, discarded
            c = data[position]
            position += 1
        while c == 0xFF:
            if position >= size:
                return PREMATURE_EOF, 0, position, discarded
            c = data[position]
            position += 1
        if c != 0:
            break
        discarded += 2
    if discarded != 0:
        return EXTRANEOUS_DATA, c, position, 0
    return OK, c, position, 0


@compiled()
def _read_markers(data, counts, values, defined, state, components, scan, params):
    """libjpeg's read_markers over one stream: (code, 1 at SOS | 2 at EOI, position)."""
    size = data.shape[0]
    if size < 2:
        return PREMATURE_EOF, 0, size
    if data[0] != 0xFF or data[1] != 0xD8:
        return MALFORMED, 0, 2  # JERR_NO_SOI
    position = 2
    saw_soi = False
    marker = 0xD8
    while True:
        if marker == 0:
            code, marker, position, _ = _next_marker(data, position, 0)
            if code != OK:
                return code, 0, position
        if marker == 0xD8:
            if saw_soi:
                return MALFORMED, 0, position
            saw_soi = True
            state[0] = 0  # restart interval, JFIF and Adobe facts are reset by each SOI
            state[1] = 0
            state[2] = 1
            state[3] = 0
            state[4] = 0
        elif marker == 0xD9:
            return OK, 2, position
        elif (0xD0 <= marker <= 0xD7) or marker == 0x01:
            pass  # parameterless
        elif marker == 0xDA:
            code, position = _read_sos(data, position, state, components, scan, params)
            return code, 1, position
        else:
            if position + 2 > size:
                return PREMATURE_EOF, 0, position
            length = (np.int64(data[position]) << 8) | np.int64(data[position + 1])
            start = position + 2
            code = OK
            if marker in (0xC0, 0xC1, 0xC2, 0xC9, 0xCA):
                code = _read_sof(data, position, length, marker, state, components)
            elif marker in (0xC3, 0xC5, 0xC6, 0xC7, 0xC8, 0xCB, 0xCD, 0xCE, 0xCF):
                return MALFORMED, 0, position  # JERR_SOF_UNSUPPORTED
            elif marker == 0xC4:
                code = _read_dht(data, start, length - 2, counts, values, defined)
            elif marker == 0xDD:
                if length != 4:
                    return MALFORMED, 0, position
                if start + 2 > size:
                    return PREMATURE_EOF, 0, position
                state[0] = (np.int64(data[start]) << 8) | np.int64(data[start + 1])
            elif marker == 0xE0 or marker == 0xEE:
                _examine_app(data, start, length - 2, marker, state)
                if marker == 0xE0 and state[1] == 1 and state[2] != 1:
                    return JFIF_MAJOR, 0, position
            elif not ((0xE0 <= marker <= 0xEF) or marker in (0xFE, 0xDB, 0xDC, 0xCC)):
                return MALFORMED, 0, position  # JERR_UNKNOWN_MARKER
            if code != OK:
                return code, 0, position
            # Every segment ends where its length says (libjpeg errs if DHT/DQT/SOF disagree).
            position = start + max(length - 2, 0)
            if position > size:
                return PREMATURE_EOF, 0, size
        marker = 0


@compiled()
def _read_sof(data, position, length, marker, state, components):
    size = data.shape[0]
    if state[5] == 1:
        return MALFORMED  # JERR_SOF_DUPLICATE
    if position + 8 > size:
        return PREMATURE_EOF
    precision = np.int64(data[position + 2])
    height = (np.int64(data[position + 3]) << 8) | np.int64(data[position + 4])
    width = (np.int64(data[position + 5]) << 8) | np.int64(data[position + 6])
    n_components = np.int64(data[position + 7])
    if height <= 0 or width <= 0 or n_components <= 0 or length - 8 != n_components * 3:
        return MALFORMED
    if n_components > 4:
        return UNVERIFIED
    if position + 8 + 3 * n_components > size:
        return PREMATURE_EOF
    for i in range(n_components):
        at = position + 8 + 3 * i
        components[i, 0] = data[at]
        components[i, 1] = data[at + 1] >> 4
        components[i, 2] = data[at + 1] & 15
    state[5] = 1
    state[6] = marker
    state[7] = precision
    state[8] = height
    state[9] = width
    state[10] = n_components
    return OK


@compiled()
def _read_sos(data, position, state, components, scan, params):
    """get_sos: (code, position of the first byte of compressed data)."""
    size = data.shape[0]
    if state[5] == 0:
        return MALFORMED, position  # JERR_SOS_NO_SOF
    if position + 3 > size:
        return PREMATURE_EOF, position
    length = (np.int64(data[position]) << 8) | np.int64(data[position + 1])
    n = np.int64(data[position + 2])
    if length != n * 2 + 6 or n < 1 or n > 4:
        return MALFORMED, position
    if position + length > size:
        return PREMATURE_EOF, position
    at = position + 3
    for i in range(n):
        wanted = data[at]
        found = -1
        for ci in range(min(state[10], 4)):
            if components[ci, 0] == wanted:
                taken = False
                for pi in range(i):
                    taken = taken or scan[pi, 0] == ci
                if not taken:
                    found = ci
                    break
        if found < 0:
            return MALFORMED, position  # JERR_BAD_COMPONENT_ID
        scan[i, 0] = found
        scan[i, 1] = data[at + 1] >> 4
        scan[i, 2] = data[at + 1] & 15
        at += 2
    params[0] = n
    params[1] = data[at]
    params[2] = data[at + 1]
    params[3] = data[at + 2] >> 4
    params[4] = data[at + 2] & 15
    return OK, position + length


@compiled()
def _read_dht(data, position, length, counts, values, defined):
    size = data.shape[0]
    while length > 16:
        if position + 17 > size:
            return PREMATURE_EOF
        index = np.int64(data[position])
        total = 0
        for i in range(16):
            total += data[position + 1 + i]
        length -= 17
        if total > 256 or total > length:
            return MALFORMED  # JERR_BAD_HUFF_TABLE
        if position + 17 + total > size:
            return PREMATURE_EOF
        kind = 1 if index & 0x10 else 0
        slot = index - 0x10 if kind else index
        if slot < 0 or slot >= 4:
            return MALFORMED  # JERR_DHT_INDEX
        table = kind * 4 + slot
        counts[table, 0] = 0
        for i in range(16):
            counts[table, i + 1] = data[position + 1 + i]
        values[table, :] = 0
        for i in range(total):
            values[table, i] = data[position + 17 + i]
        defined[table] = True
        position += 17 + total
        length -= total
    if length != 0:
        return MALFORMED  # JERR_BAD_LENGTH
    return OK


@compiled()
def _examine_app(data, position, length, marker, state):
    """JFIF (APP0) and Adobe (APP14) facts from the first 14 bytes of the segment."""
    available = min(max(length, 0), 14, data.shape[0] - position)
    if marker == 0xE0 and available >= 14 and _starts_with(data, position, _JFIF):
        state[1] = 1
        state[2] = data[position + 5]
    if marker == 0xEE and available >= 12 and _starts_with(data, position, _ADOBE):
        state[3] = 1
        state[4] = data[position + 11]


@compiled(inline="always")
def _starts_with(data, position, prefix):
    return (data[position : position + prefix.shape[0]] == prefix).all()


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
                run = symbol >> 4
                if extra != 0:
                    k += run
                elif run != 15:
                    break
                else:
                    k += 15
                k += 1
    return OK, position, buffer, bits, marker


@compiled()
def _fast_mcu(
    data, position, buffer, bits, blocks, block_dc, block_ac, lookups, maxcodes, offsets, values
):
    """decode_mcu_fast: one MCU with HUFF_DECODE_FAST and FILL_BIT_BUFFER_FAST.

    Returns (position, buffer, bits, marker met). A code longer than 16 bits reads as 0 with no
    warning here; a marker reads as zero bytes without being consumed, and a nonzero marker
    tells the caller to decode the MCU again with the slow path, as libjpeg does. Written out in
    one loop: this is where the check spends its time.
    """
    size = data.shape[0]
    marker = 0
    for block in range(blocks):
        for kind in range(2):
            table = block_dc[block] if kind == 0 else block_ac[block]
            k = 1
            while k < 64:
                if bits <= 16:  # FILL_BIT_BUFFER_FAST: six GET_BYTEs
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
                    bits -= extra
                if kind == 0:
                    break
                run = symbol >> 4
                if extra != 0:
                    k += run
                elif run != 15:
                    break
                else:
                    k += 15
                k += 1
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
