"""Who owns each custom direction, and how many each client may own (docs/security.md).

    facedit:pack:<pack>:<version>:owner   hash   <direction id> -> owning client's name

The gateway forwards the client it authenticated (services/common/security.py); PutDirection
claims the direction for that client before the registry writes it:
- a new id: the client's count of owned directions in this pack version must be under its quota
  (RESOURCE_EXHAUSTED otherwise); it becomes the owner;
- an existing id (with `replace`): only its owner or an admin may replace it (PERMISSION_DENIED);
  one written before owners were recorded, or by an operator's certificate, only an admin;
- an existing id without `replace`: no claim (the registry answers that it exists).
Claim and checks are one optimistic transaction (WATCH on the owner hash and the version's
directions), so concurrent claims cannot exceed a quota or take the same id twice; a claim whose
write then fails is undone. Without an authenticated client (caller checks off: plaintext on
loopback) nothing is recorded or checked, as before.
"""
from __future__ import annotations

import dataclasses

import redis

from facedit_core.errors import FaceditError, ResourceExhausted
from facedit_core.redis_keys import pack_key
from services.common import security
from services.common.errors import PermissionDenied
from services.common.tokens import Client

ATTEMPTS = 20


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim that PutDirection undoes if the registry's write fails."""

    key: str
    direction_id: str
    owner: str
    previous: str | None


def owner_of_call() -> Client | None:
    """The client this PutDirection is for: the one the gateway forwarded, or an operator's certificate
    peer with the admin role (as "peer:<name>"); None when nobody was authenticated."""
    forwarded = security.client()
    if forwarded is not None:
        return forwarded
    peer = security.caller()
    if peer is not None and peer.admin:
        return Client(f"peer:{peer.name}", peer.roles, None, peer.kind)
    return None


class Owners:
    def __init__(self, client: redis.Redis):
        self.r = client

    def claim(self, pack: str, version: str, direction_id: str, replace: bool,
              owner: Client | None) -> Claim | None:
        """Check and record `owner` as the owner of `direction_id` (see the module docstring); None: nothing
        recorded (no owner, or an existing id without replace)."""
        if owner is None:
            return None
        key, dir_key = pack_key(pack, version, "owner"), pack_key(pack, version, "dir")
        with self.r.pipeline(transaction=True) as pipe:
            for _ in range(ATTEMPTS):
                try:
                    pipe.watch(key, dir_key)
                    exists = bool(pipe.hexists(dir_key, direction_id))
                    if exists and not replace:
                        pipe.unwatch()
                        return None
                    current = pipe.hget(key, direction_id)
                    current = current.decode() if current is not None else None
                    if current is not None and current != owner.name and not owner.admin:
                        raise PermissionDenied(f"{direction_id} belongs to another client: only its owner or an "
                                               f"admin may replace it; choose another name")
                    if exists and current is None and not owner.admin:
                        raise PermissionDenied(f"{direction_id} has no recorded owner (made before owners were "
                                               f"recorded, or by an operator): only an admin may replace it; "
                                               f"choose another name")
                    if current != owner.name and owner.quota is not None and not owner.admin:
                        owned = sum(1 for v in pipe.hvals(key) if v.decode() == owner.name)
                        if owned >= owner.quota:
                            raise ResourceExhausted(
                                f"client {owner.name} already owns {owned} custom directions in pack {pack} "
                                f"{version}, its quota ({owner.quota}); replace one of its own (replace) or ask an "
                                f"operator to raise its custom_quota in the tokens file")
                    pipe.multi()
                    pipe.hset(key, direction_id, owner.name)
                    pipe.execute()
                    return Claim(key, direction_id, owner.name, current)
                except redis.WatchError:
                    continue
        raise FaceditError(f"{direction_id}: the owners kept changing under {ATTEMPTS} attempts; retry", "ABORTED")

    def undo(self, claim: Claim | None) -> None:
        """Give a claim back (its write failed): the previous owner again, or none."""
        if claim is None:
            return
        with self.r.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(claim.key)
                held = pipe.hget(claim.key, claim.direction_id)
                if held is None or held.decode() != claim.owner:
                    pipe.unwatch()
                    return
                pipe.multi()
                if claim.previous is None:
                    pipe.hdel(claim.key, claim.direction_id)
                else:
                    pipe.hset(claim.key, claim.direction_id, claim.previous)
                pipe.execute()
            except (redis.WatchError, redis.RedisError):
                pass  # a stale claim only counts against its own client's quota until replaced

    def owned(self, pack: str, version: str) -> dict[str, str]:
        """direction id -> owner, for a pack version."""
        raw = self.r.hgetall(pack_key(pack, version, "owner"))
        return {k.decode(): v.decode() for k, v in raw.items()}
