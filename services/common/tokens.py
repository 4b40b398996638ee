"""Bearer tokens of named clients, read from a tokens file (JSON; in production a mounted secret).

    {"default_custom_quota": 10,
     "clients": [
       {"name": "web", "token_sha256": "<64 hex digits>", "roles": ["edit", "create"], "custom_quota": 50},
       {"name": "ops", "token": "<a long random string>", "roles": ["admin"]},
       {"name": "batch", "token_sha256": "<64 hex digits>", "roles": ["edit"], "rate_per_s": 5, "burst": 10,
        "concurrency": 2}]}

Each client has a name, its token (`token`) or better the token's sha256 (`token_sha256`, so the
file does not hold the secret itself), roles (ROLES) and a quota of custom directions per pack
version (`custom_quota`, default `default_custom_quota`; admins have none), and optionally its own
admission limits at the gateway (`rate_per_s`, `burst`, `concurrency`: services/common/admission.py;
missing ones are the gateway's --client-* flags). Only sha256 digests
are kept in memory; a presented token is hashed and compared with every client's digest by
hmac.compare_digest. The file is read again when it changes (a rotated Kubernetes secret), at
most every RELOAD_CHECK_S; a file that no longer parses keeps the clients it had.

    python -m services.common.tokens new --name web --roles edit,create   # a token and its entry
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path

ROLES = {
    "edit": "every RPC of the gateway but CreateDirection: Edit, EditSweep, EditPhoto, Encode, Generate, "
            "ListAttributes, Blend, Arithmetic",
    "create": "CreateDirection: custom directions owned by the client, within its quota",
    "admin": "everything, replacing anyone's custom direction, no quota",
}
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
HEX64 = re.compile(r"[0-9a-f]{64}")
MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096  # longer presented tokens are refused before hashing
DEFAULT_CUSTOM_QUOTA = 10
RELOAD_CHECK_S = 5.0


class TokensFileError(ValueError):
    """The tokens file is missing or malformed; the message names the entry, never a token."""


@dataclasses.dataclass(frozen=True)
class Client:
    """Who called: a named client of the tokens file (kind "token"), a peer identified by its
    client certificate (kind "peer"), or a client whose identity the gateway forwarded
    (kind "forwarded"). quota: custom directions it may own per pack version (None: no limit);
    rate_per_s, burst, concurrency: its own admission limits (None: the service's defaults)."""

    name: str
    roles: frozenset[str]
    quota: int | None = None
    kind: str = "token"
    rate_per_s: float | None = None
    burst: int | None = None
    concurrency: int | None = None

    def has(self, role: str) -> bool:
        return role in self.roles or "admin" in self.roles

    @property
    def admin(self) -> bool:
        return "admin" in self.roles


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse(text: str, source: str = "tokens file") -> list[tuple[bytes, Client]]:
    """The tokens file's text -> (sha256 digest, Client) per client; TokensFileError says what is wrong."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise TokensFileError(f"{source}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list) or not doc["clients"]:
        raise TokensFileError(f'{source}: expected {{"clients": [{{"name": ..., "token_sha256": ..., '
                              f'"roles": [...]}}, ...]}} with at least one client')
    default_quota = doc.get("default_custom_quota", DEFAULT_CUSTOM_QUOTA)
    if not _is_count(default_quota):
        raise TokensFileError(f"{source}: default_custom_quota must be an integer >= 0")
    out: list[tuple[bytes, Client]] = []
    names, digests = set(), set()
    for i, entry in enumerate(doc["clients"]):
        where = f"{source}: clients[{i}]"
        if not isinstance(entry, dict):
            raise TokensFileError(f"{where}: expected an object")
        unknown = set(entry) - {"name", "token", "token_sha256", "roles", "custom_quota", *LIMITS}
        if unknown:
            raise TokensFileError(f"{where}: unknown keys {sorted(unknown)}")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise TokensFileError(f"{where}: name must be 1-64 characters of A-Z a-z 0-9 _ . @ -")
        where = f"{source}: client {name!r}"
        if name in names:
            raise TokensFileError(f"{where}: the name appears twice")
        if ("token" in entry) == ("token_sha256" in entry):
            raise TokensFileError(f"{where}: give exactly one of token and token_sha256")
        if "token" in entry:
            token = entry["token"]
            if not isinstance(token, str) or not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS \
                    or any(c.isspace() for c in token):
                raise TokensFileError(f"{where}: token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters "
                                      f"without spaces (python -m services.common.tokens new makes one)")
            value = digest(token)
        else:
            hexed = entry["token_sha256"]
            if not isinstance(hexed, str) or not HEX64.fullmatch(hexed.lower()):
                raise TokensFileError(f"{where}: token_sha256 must be 64 hex digits (sha256 of the token)")
            value = bytes.fromhex(hexed)
        if value in digests:
            raise TokensFileError(f"{where}: has the same token as another client")
        roles = entry.get("roles")
        if not isinstance(roles, list) or not roles or not all(r in ROLES for r in roles):
            raise TokensFileError(f"{where}: roles must be a non-empty list of {sorted(ROLES)}")
        quota = entry.get("custom_quota", default_quota)
        if not _is_count(quota):
            raise TokensFileError(f"{where}: custom_quota must be an integer >= 0")
        for key, (ok, what) in LIMITS.items():
            if key in entry and not ok(entry[key]):
                raise TokensFileError(f"{where}: {key} must be {what}")
        names.add(name)
        digests.add(value)
        out.append((value, Client(name, frozenset(roles), None if "admin" in roles else quota,
                                  rate_per_s=entry.get("rate_per_s"), burst=entry.get("burst"),
                                  concurrency=entry.get("concurrency"))))
    return out


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_rate(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 1e6


# a client's own admission limits: key -> (check, what it must be)
LIMITS = {"rate_per_s": (_is_rate, "a number of calls per second >= 0 (0: no rate limit)"),
          "burst": (lambda v: _is_count(v) and v >= 1, "an integer >= 1"),
          "concurrency": (_is_count, "an integer >= 0 (0: no limit)")}


class TokenStore:
    """The clients of a tokens file; `lookup(token)` -> Client or None. Thread-safe."""

    def __init__(self, path: str | Path, logger: logging.Logger | None = None, reload_check_s: float = RELOAD_CHECK_S):
        self.path, self.logger, self.reload_check_s = Path(path), logger, reload_check_s
        self._lock = threading.Lock()
        self._stat = self._file_stat()
        self._clients = parse(self._read(), str(self.path))
        self._checked = time.monotonic()

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except OSError as err:
            raise TokensFileError(f"tokens file {self.path}: {err.strerror or err}") from None

    def _file_stat(self):
        try:
            st = os.stat(self.path)
            return st.st_mtime_ns, st.st_size, st.st_ino
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.reload_check_s:
            return
        with self._lock:
            if now - self._checked < self.reload_check_s:
                return
            self._checked = now
            stat = self._file_stat()
            if stat == self._stat:
                return
            self._stat = stat
            try:
                self._clients = parse(self._read(), str(self.path))
            except TokensFileError as err:
                if self.logger:
                    self.logger.error("tokens file unreadable; keeping the clients read before",
                                      extra={"fields": {"error": str(err)}})
                return
            if self.logger:
                self.logger.info("tokens file read again", extra={"fields": {"clients": len(self._clients)}})

    def clients(self) -> list[Client]:
        return [c for _, c in self._clients]

    def lookup(self, token: str) -> Client | None:
        """The client whose token this is, or None. Every client's digest is compared (in constant
        time each), so the time taken does not tell which, or how much, matched."""
        self._maybe_reload()
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        presented, found = digest(token), None
        for value, client in self._clients:
            if hmac.compare_digest(presented, value):
                found = client
        return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m services.common.tokens", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    new = sub.add_parser("new", help="print a new random token and the tokens-file entry with its sha256")
    new.add_argument("--name", required=True)
    new.add_argument("--roles", default="edit", help=f"comma-separated, of {sorted(ROLES)}")
    new.add_argument("--custom-quota", type=int, default=None)
    check = sub.add_parser("check", help="read a tokens file and list its clients (never their tokens)")
    check.add_argument("path")
    args = p.parse_args(argv)
    if args.command == "check":
        for c in TokenStore(args.path).clients():
            print(f"{c.name}: roles {sorted(c.roles)}, custom quota {'none' if c.quota is None else c.quota}")
        return
    token = secrets.token_urlsafe(32)
    entry = {"name": args.name, "token_sha256": digest(token).hex(), "roles": args.roles.split(",")}
    if args.custom_quota is not None:
        entry["custom_quota"] = args.custom_quota
    parse(json.dumps({"clients": [entry]}), "the new entry")  # validates name and roles
    print(f"token (give it to the client; it is not stored anywhere): {token}")
    print(f"entry for the tokens file: {json.dumps(entry)}")


if __name__ == "__main__":
    main()
