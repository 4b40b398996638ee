"""What the `facedit` command prints: tables and summaries for people, JSON for scripts, a
progress bar on stderr."""
from __future__ import annotations

import json
import math
import sys
from typing import Sequence, TextIO

from google.protobuf import json_format

BYTES_FIELDS = ("image", "original", "reconstruction", "crop_before", "crop_after", "images", "inputs")
TENSOR_FIELDS = ("latent", "latents", "embedding", "vector")


def message_dict(message, drop: Sequence[str] = BYTES_FIELDS + TENSOR_FIELDS) -> dict:
    """A response as a JSON-ready dict (proto field names, enums by name), without its image bytes
    and tensors (the command writes images to files and says where)."""
    copy = type(message)()
    copy.CopyFrom(message)
    _clear(copy, set(drop))
    return json_format.MessageToDict(copy, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def _clear(message, drop: set[str]) -> None:
    for field in message.DESCRIPTOR.fields:
        if field.name in drop:
            message.ClearField(field.name)
        elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
            if field.is_repeated:
                for item in getattr(message, field.name):
                    _clear(item, drop)
            elif message.HasField(field.name):
                _clear(getattr(message, field.name), drop)


def print_json(data: object, out: TextIO = sys.stdout) -> None:
    json.dump(data, out, indent=2, sort_keys=False)
    out.write("\n")


def table(rows: Sequence[Sequence[str]], header: Sequence[str], out: TextIO = sys.stdout) -> None:
    """Columns padded to their widest cell, the header underlined."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out.write(line + "\n" + "  ".join("-" * w for w in widths) + "\n")
    for row in rows:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() + "\n")


class Progress:
    """A one-line progress bar on stderr, redrawn in place: `[#####-----] 5/10 photos  4 faces  1 failed`.
    enabled None: only when stderr is a terminal."""

    def __init__(self, total: int, unit: str, enabled: bool | None = None, out: TextIO = sys.stderr, width: int = 24):
        self.total, self.unit, self.out, self.width = total, unit, out, width
        self.enabled = out.isatty() if enabled is None else enabled
        self.done = 0

    def update(self, done: int, note: str = "") -> None:
        self.done = done
        if not self.enabled:
            return
        filled = round(self.width * done / max(1, self.total))
        self.out.write(f"\r[{'#' * filled}{'-' * (self.width - filled)}] {done}/{self.total} {self.unit}"
                       f"{'  ' + note if note else ''}\033[K")
        self.out.flush()

    def close(self) -> None:
        if self.enabled:
            self.out.write("\n")
            self.out.flush()


def inversion(report: dict) -> str:
    """An InversionReport (fidelity faithful) as message_dict gives it, in words: the FaceNet identity
    and the pixel error before -> after, the steps and the time."""
    return (f"faithful: identity {report['identity_before']:.2f}->{report['identity_after']:.2f}, pixel error "
            f"{report['pixel_error_before']:.1f}->{report['pixel_error_after']:.1f}, {report['steps']} steps in "
            f"{report['seconds']:.1f} s")


def signed(x: float) -> str:
    return f"{x:+.2f}"


def score(x: float) -> str:
    """A probability 0..1, or "-" when not measured (NaN: skip_scores)."""
    return "-" if math.isnan(x) else f"{x:.3f}"
