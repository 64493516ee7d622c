"""Reading a JPEG tile's markers the way libjpeg-turbo's marker reader does (``jdmarker.c``):
frame, scan, Huffman tables, APP segments, and the warnings it gives on the way. The codes are
:mod:`.jpeg_check`'s; the entropy-coded scan is read there.
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
# ITU-T T.81 Annex K.3 (tables K.3 to K.6): the default Huffman tables libjpeg installs for
# table slots 0 and 1 a stream leaves undefined (std_huff_tables). Row: 16 code counts, values.
DEFAULT_COUNTS = np.array(
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
DEFAULT_VALUES = np.zeros((4, 256), dtype=np.int64)
DEFAULT_VALUES[0, :12] = np.arange(12)
DEFAULT_VALUES[1, :12] = np.arange(12)
DEFAULT_VALUES[2, :162] = np.frombuffer(_AC_LUMINANCE, np.uint8)
DEFAULT_VALUES[3, :162] = np.frombuffer(_AC_CHROMINANCE, np.uint8)
_JFIF = np.frombuffer(b"JFIF\0", np.uint8)  # APP0 identifiers libjpeg looks for
_ADOBE = np.frombuffer(b"Adobe", np.uint8)

# Table slots: DC tables 0-3, AC tables 4-7. ``stream`` state: [restart interval, saw JFIF,
# JFIF major version, saw Adobe, Adobe transform, saw SOF, SOF marker, precision, height,
# width, components]; ``components``: rows of (id, h, v); ``scan``: rows of (component row,
# DC table, AC table); ``scan_params``: [components in scan, Ss, Se, Ah, Al].


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
