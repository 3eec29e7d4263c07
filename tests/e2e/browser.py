"""A real browser for the report tests: Debian's headless Chromium renders a local HTML
file to its DOM (after parsing, as a user's browser builds it) or to a PNG screenshot, and a
small PNG decoder (zlib only: Pillow is no dependency of the project) reads the pixels back.

Chromium runs with networking off where a flag allows it and a throwaway profile, and is
killed with its process group if it hangs; `bench/report_picture.py` uses the same helpers
for docs/report.png.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import tempfile
import zlib
from collections import Counter
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-dev-shm-usage", "--no-first-run", "--hide-scrollbars",
         "--disable-extensions", "--disable-sync", "--mute-audio")
INSTALL_HINT = "apt-get install chromium"
TIMEOUT = 90.0


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    binary = find_chromium()
    if binary is None:
        raise FileNotFoundError(f"chromium not found: {INSTALL_HINT}")
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
        finally:
            # the browser's helpers (zygote, crashpad) must not outlive the test
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def dump_dom(page: Path) -> str:
    """The page's DOM as Chromium serialises it after loading it."""
    proc = _run(["--dump-dom", page.resolve().as_uri()])
    if proc.returncode != 0 or "<html" not in proc.stdout:
        raise RuntimeError(f"chromium --dump-dom failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    return proc.stdout


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 900) -> bytes:
    """The page rendered at width x height, as PNG bytes (also written to `png`)."""
    png.unlink(missing_ok=True)
    proc = _run([f"--screenshot={png}", f"--window-size={width},{height}",
                 page.resolve().as_uri()])
    if not png.exists():
        raise RuntimeError(f"chromium --screenshot wrote nothing ({proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    return png.read_bytes()


# ---- PNG decoding (8-bit greyscale/RGB/RGBA, not interlaced: what Chromium writes) ----

def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """(width, height, RGB pixels row by row)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat = 8, b""
    width = height = depth = kind = interlace = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if tag == b"IHDR":
            width, height, depth, kind, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat += body
        elif tag == b"IEND":
            break
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(kind)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {kind}, "
                         f"interlace {interlace})")
    raw = zlib.decompress(idat)
    stride = width * channels
    prev = bytearray(stride)
    pixels: list[tuple[int, int, int]] = []
    pos = 0
    for _ in range(height):
        kind_of_filter = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            corner = prev[i - channels] if i >= channels else 0
            if kind_of_filter == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind_of_filter == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind_of_filter == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif kind_of_filter == 4:
                line[i] = (line[i] + _paeth(left, up, corner)) & 0xFF
        for x in range(width):
            px = line[x * channels:(x + 1) * channels]
            pixels.append((px[0], px[0], px[0]) if channels <= 2 else (px[0], px[1], px[2]))
        prev = line
    return width, height, pixels


def colours(pixels: list[tuple[int, int, int]]) -> Counter[tuple[int, int, int]]:
    return Counter(pixels)


def hex_rgb(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)
