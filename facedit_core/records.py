"""Direction records: the one definition of what a direction is, shared by training (which
writes them into a pack's directions.json) and the services (which keep them in Redis).

A record describes one unit vector (its `dim` floats) in a space: "latent" directions move the
generator's latent z; "facenet" directions (ISTRC) move a FaceNet embedding on its unit sphere.
Ids are `<method>/<name>`; clients' own directions are `custom/<name>`.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re

from facedit_core.errors import InvalidArgument, shorten

# the edit methods, as named in packs, records and Redis (the proto enum METHOD_<NAME> maps onto these)
METHODS = ("interfacegan", "tlgan", "crg", "istrc", "words", "sefa", "custom", "refined")

CUSTOM_PREFIX = "custom/"   # ids of directions that clients create at run time
ISTRC_PREFIX = "istrc/"     # ids of ISTRC directions (embedding space)
LATENT_SPACE = "latent"     # record `space` of directions in the generator's latent space
FACENET_SPACE = "facenet"   # record `space` of ISTRC directions on the FaceNet embedding sphere

# what "strength" means, per space
OFFSET_MEANING = ("offset along the unit direction in latent units: z' = z + strength * n "
                  "(n . z ~ N(0, 1) under the prior, so 3 is about three standard deviations)")
ISTRC_STRENGTH_MEANING = ("signed path length on the unit sphere of FaceNet embeddings, in radians: |s| / step "
                          "constant-length steps along the attribute classifier's gradient (tangent to the sphere), "
                          "renormalised after each; s > 0 adds the attribute, s < 0 removes it")

# limits of one request and of the registry
MAX_EDITS = 16                 # edits composed in one request
MAX_KEEP = 16                  # attributes kept fixed in one request
MAX_CUSTOM_PER_VERSION = 1000  # custom directions per pack version
UNIT_TOLERANCE = 1e-4          # |1 - |v|| allowed for a stored unit vector
# bounds of every field of a stored record (a registry write beyond them is refused)
MAX_STRENGTH_LIMIT = 100.0     # |strength| cap of any direction, in its own units
MAX_ID_CHARS = 96
MAX_ATTRIBUTE_CHARS = 40
MAX_MEANING_CHARS = 512
MAX_PROVENANCE_BYTES = 4096    # provenance as JSON
MAX_METRICS = 64
MAX_DIM = 4096                 # floats in a direction's vector

NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,40}")  # a client's direction or attribute name


def custom_id(name: str) -> str:
    """A client's direction name -> its registry id `custom/<name>`; InvalidArgument if malformed."""
    if not NAME_PATTERN.fullmatch(name or ""):
        raise InvalidArgument(f"name {shorten(name or '')!r}: use 1 to 40 characters of a-z, 0-9, '_' and '-' "
                              f"(it becomes the direction id custom/<name>)")
    return CUSTOM_PREFIX + name


@dataclasses.dataclass(frozen=True)
class DirectionRecord:
    """The metadata of one direction (its vector travels apart, as float32 bytes or a .npy row).

    strength_min/max: the recommended range; strength_limit: the hard cap |strength| <= limit;
    metrics: flat name -> float figures; provenance: how it was made (a JSON object)."""

    id: str
    attribute: str
    method: str
    strength_min: float
    strength_max: float
    strength_limit: float
    strength_meaning: str
    metrics: dict
    provenance: dict
    space: str = LATENT_SPACE   # "latent" (z) or "facenet" (unit sphere of FaceNet embeddings)
    dim: int = 0                # length of the vector; 0 in records older than the field = latent_dim

    @classmethod
    def from_dict(cls, data: dict) -> "DirectionRecord":
        """From a directions.json entry or a stored JSON object; extra keys (e.g. `row`) are ignored."""
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING]
        if missing:
            raise InvalidArgument(f"direction record {data.get('id')!r} lacks {missing}")
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})

    @classmethod
    def from_json(cls, raw: bytes | str) -> "DirectionRecord":
        return cls.from_dict(json.loads(raw))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    def check(self) -> "DirectionRecord":
        """Raise InvalidArgument unless id = <method>/<name>, the strength range is sane, the metrics
        are finite numbers and every field is within its bound (MAX_*); returns self."""
        if not isinstance(self.id, str) or not 0 < len(self.id) <= MAX_ID_CHARS:
            raise InvalidArgument(f"direction id {shorten(self.id)!r}: 1 to {MAX_ID_CHARS} characters")
        method, _, name = self.id.partition("/")
        if not name or method != self.method or self.method not in METHODS:
            raise InvalidArgument(f"direction id {self.id!r} must be '<method>/<name>' with a method of {METHODS}")
        if not isinstance(self.attribute, str) or len(self.attribute) > MAX_ATTRIBUTE_CHARS:
            raise InvalidArgument(f"{self.id}: attribute {shorten(self.attribute)!r} is over "
                                  f"{MAX_ATTRIBUTE_CHARS} characters")
        if not isinstance(self.strength_meaning, str) or len(self.strength_meaning) > MAX_MEANING_CHARS:
            raise InvalidArgument(f"{self.id}: strength_meaning is over {MAX_MEANING_CHARS} characters")
        numbers = (self.strength_min, self.strength_max, self.strength_limit)
        if not all(_finite(x) for x in numbers) or not 0 < self.strength_limit <= MAX_STRENGTH_LIMIT:
            raise InvalidArgument(f"{self.id}: strength range and limit must be finite, "
                                  f"0 < limit <= {MAX_STRENGTH_LIMIT:g}")
        if not -self.strength_limit <= self.strength_min <= self.strength_max <= self.strength_limit:
            raise InvalidArgument(f"{self.id}: need -limit <= strength_min <= strength_max <= limit, got "
                                  f"{self.strength_min}, {self.strength_max}, limit {self.strength_limit}")
        if not isinstance(self.metrics, dict) or len(self.metrics) > MAX_METRICS:
            raise InvalidArgument(f"{self.id}: metrics must be a JSON object of at most {MAX_METRICS} numbers")
        if not all(_finite(v) for v in self.metrics.values()) or \
                not all(isinstance(k, str) and len(k) <= MAX_ID_CHARS for k in self.metrics):
            raise InvalidArgument(f"{self.id}: metrics must be finite numbers with names of at most "
                                  f"{MAX_ID_CHARS} characters")
        if not isinstance(self.provenance, dict):
            raise InvalidArgument(f"{self.id}: provenance must be a JSON object")
        size = len(json.dumps(self.provenance).encode())
        if size > MAX_PROVENANCE_BYTES:
            raise InvalidArgument(f"{self.id}: provenance is {size} bytes as JSON; at most {MAX_PROVENANCE_BYTES}")
        if not isinstance(self.dim, int) or not 0 <= self.dim <= MAX_DIM:
            raise InvalidArgument(f"{self.id}: dim must be 0 to {MAX_DIM}")
        if self.space not in (LATENT_SPACE, FACENET_SPACE):
            raise InvalidArgument(f"{self.id}: space must be {LATENT_SPACE!r} or {FACENET_SPACE!r}, got {self.space!r}")
        return self


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
