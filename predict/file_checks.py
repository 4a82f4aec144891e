"""Damaged or inconsistent binary scan files, found before a reader guesses around them.

Why: rosettasciio's readers assume a well-formed file. A Merlin .mib cut short divides by zero
or silently drops the last scan lines; a blockfile shorter than its header says is padded with
zeros; a truncated .npy fails to map with NumPy's words. These checks read only the headers
and the file size and say what is wrong in the file's own terms (frame size and file size,
the header file that is missing), so that nothing is predicted from a partial scan.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stemdl.configs import StemdlError


class DamagedFileError(StemdlError, ValueError):
    """A scan file that is truncated, inconsistent with its header, or missing a part."""


_MIB_PIXEL_BYTES = {"U08": 1, "U16": 2, "U32": 4}
_MIB_HEADER = 384


def check_mib(path: Path, scan_shape: tuple[int, int] | None) -> int:
    """The number of frames of a Merlin .mib, after checking that it is a whole number of the
    frames its first header describes, that its .hdr (which gives the scan shape) is beside it
    or `scan_shape` is given, and that the .hdr and the file agree."""
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_MIB_HEADER).decode("ascii", "replace").split(",")
    if len(head) < 8 or head[0] != "MQ1":
        raise DamagedFileError(f"{path}: not a Merlin .mib: it does not start with an 'MQ1' "
                               "frame header")
    try:
        header_bytes, width, height = int(head[2]), int(head[4]), int(head[5])
    except ValueError:
        raise DamagedFileError(f"{path}: the first frame header is damaged (header size, "
                               f"width, height read {head[2:3] + head[4:6]})") from None
    pixel = head[6]
    if pixel == "R64":
        raise DamagedFileError(f"{path}: RAW (R64) Merlin frames, which rosettasciio does not "
                               "decode; record in a processed mode (U08, U16 or U32 pixels)")
    if pixel not in _MIB_PIXEL_BYTES or width <= 0 or height <= 0 or header_bytes <= 0:
        raise DamagedFileError(f"{path}: the first frame header is damaged: {width}x{height} "
                               f"px of type {pixel!r}, {header_bytes}-byte header")
    frame = header_bytes + width * height * _MIB_PIXEL_BYTES[pixel]
    frames, left = divmod(size, frame)
    if left or not frames:
        raise DamagedFileError(
            f"{path}: {size} bytes is not a whole number of frames of {frame} bytes (a "
            f"{header_bytes}-byte header and {width}x{height} {pixel} pixels): {frames} whole "
            f"frames and {left} bytes over; the file is truncated or damaged")
    hdr = path.with_suffix(".hdr")
    if not hdr.exists():
        if scan_shape is None:
            raise DamagedFileError(f"{path}: no {hdr.name} beside it, the header file that "
                                   "gives the scan shape: copy it with the .mib, or pass "
                                   "--scan-shape ROWS COLS")
    else:
        recorded = _hdr_frames(hdr)
        if recorded and recorded != frames:  # 0: a continuous acquisition, no count
            raise DamagedFileError(f"{path}: {hdr.name} records {recorded} frames, the file "
                                   f"holds {frames} ({frame} bytes each): an interrupted or "
                                   "truncated acquisition, or a header of another file")
    if scan_shape is not None and scan_shape[0] * scan_shape[1] != frames:
        raise DamagedFileError(f"{path}: {frames} frames do not make a scan of --scan-shape "
                               f"{scan_shape[0]} {scan_shape[1]} "
                               f"({scan_shape[0] * scan_shape[1]} frames)")
    return frames


def _hdr_frames(hdr: Path) -> int | None:
    for line in hdr.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Frames in Acquisition (Number)":
            try:
                return int(value.strip())
            except ValueError:
                raise DamagedFileError(f"{hdr}: 'Frames in Acquisition (Number)' is "
                                       f"{value.strip()!r}, not a number") from None
    return None


def check_blockfile(path: Path) -> None:
    """An ASTAR blockfile: its header is there and the file is as long as the frames it
    records (6-byte frame header + DP_SZ² bytes each, from Data_offset_2)."""
    from rsciio.blockfile._api import get_header_dtype_list, magics

    header_dtype = np.dtype(get_header_dtype_list("<"))
    size = path.stat().st_size
    if size < header_dtype.itemsize:
        raise DamagedFileError(f"{path}: {size} bytes, shorter than a blockfile header "
                               f"({header_dtype.itemsize} bytes): truncated or not a blockfile")
    header = np.fromfile(path, dtype=header_dtype, count=1)[0]
    if header["MAGIC"] not in magics:
        raise DamagedFileError(f"{path}: no blockfile header (signature {int(header['MAGIC']):#06x}, "
                               f"expected {magics[0]:#06x}): not an ASTAR .blo, or damaged")
    side, nx, ny = int(header["DP_SZ"]), int(header["NX"]), int(header["NY"])
    expected = int(header["Data_offset_2"]) + nx * ny * (6 + side * side)
    if size < expected:
        raise DamagedFileError(f"{path}: the header records {nx}x{ny} frames of {side}x{side} "
                               f"px ({expected} bytes with the header), the file holds {size}: "
                               "truncated")


def check_npy(path: Path) -> None:
    """A .npy holds all the data its header describes."""
    with open(path, "rb") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version not in ((1, 0), (2, 0)):
                return  # NumPy's own reader says what it finds in other versions
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(handle)
        except ValueError as error:
            raise DamagedFileError(f"{path}: not a readable .npy ({error})") from None
        offset = handle.tell()
    expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
    held = path.stat().st_size - offset
    if held < expected:
        raise DamagedFileError(f"{path}: the .npy header describes {shape} {np.dtype(dtype)} "
                               f"({expected} bytes), the file holds {held}: truncated")
