"""Stateless user tokens: what a browser presents to open a notebook's WebSocket.

A token is three dot-separated parts, all url-safe (no padding, no characters that need escaping
in a query string or a URL fragment)::

    v1.<payload>.<signature>

- `payload` is base64url of the canonical JSON encoding of the claims
  `{"e": expires, "g": incarnation, "i": issued, "n": notebook, "r": role,
  "u": {"id", "name", "color"?}}` (keys sorted, no whitespace, UTF-8), so the same claims always
  give the same token. `issued` is the minting time in epoch milliseconds (a kick refuses the
  user's tokens issued up to it); `incarnation` names the life of the notebook the token was
  minted for (a notebook deleted and created again has another one, so old tokens stop working).
- `signature` is base64url of HMAC-SHA256(secret, b"agora-token.v1." + payload-as-sent).

Verification checks the signature over the bytes exactly as received before parsing anything, and
compares it in constant time. Nothing is stored on the server: any host holding the same secret
accepts the token (contract §3, §7).

Clock skew: hosts behind one proxy, and the platform's servers that mint tokens, never agree on the
time exactly. `verify_token` therefore accepts a token until `expires + leeway` seconds (30 s by
default). `expires` itself is what the API reports, so a platform refreshing a token a minute before
`expires` never sees a valid token refused.

Size: ids are capped at 256 characters, the user's name at 200 and the color at 32, so the longest
possible token is about 2.1 KB, far below any URL limit (nginx allows 8 KB by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any, Literal, cast

Role = Literal["viewer", "editor"]
ROLES: tuple[str, ...] = ("viewer", "editor")

VERSION = "v1"
_DOMAIN = b"agora-token.v1."
MAX_NOTEBOOK_ID = 256
MAX_USER_ID = 256
MAX_USER_NAME = 200
MAX_COLOR = 32
MAX_INCARNATION = 64
# Anything longer cannot be a token we minted; refuse before decoding.
MAX_TOKEN_LENGTH = 4096
_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenError(Exception):
    """A token that cannot be accepted. `code` is one of `token_malformed`, `token_bad_signature`,
    `token_expired`; `message` is a human sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: who (`user`), on which notebook, with which role, until when."""

    notebook: str
    user: dict[str, str]  # {"id", "name", "color"?}
    role: Role
    expires: int  # epoch seconds
    issued: int = 0  # epoch milliseconds; 0 for a token minted before tokens carried it
    incarnation: str = ""  # the notebook's incarnation; "" for a token minted before it existed


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict base64url without padding; raises ValueError on anything else."""
    if not text or any(c not in _B64_ALPHABET for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _check_user(user: Any) -> dict[str, str]:
    """The user dict as it goes into a token: `id` and `name` strings, optional `color` string."""
    if not isinstance(user, dict):
        raise ValueError("user must be an object")
    uid = user.get("id")
    if not isinstance(uid, str) or not 1 <= len(uid) <= MAX_USER_ID:
        raise ValueError(f"user.id must be a string of 1 to {MAX_USER_ID} characters")
    name = user.get("name", uid)
    if not isinstance(name, str) or len(name) > MAX_USER_NAME:
        raise ValueError(f"user.name must be a string of at most {MAX_USER_NAME} characters")
    out = {"id": uid, "name": name}
    color = user.get("color")
    if color is not None:
        if not isinstance(color, str) or len(color) > MAX_COLOR:
            raise ValueError(f"user.color must be a string of at most {MAX_COLOR} characters")
        out["color"] = color
    return out


def _signature(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, _DOMAIN + payload.encode("ascii"), hashlib.sha256).digest()


def mint_token(
    secret: bytes,
    notebook: str,
    user: dict[str, Any],
    role: str,
    expires: int,
    *,
    incarnation: str,
    issued: int,
) -> str:
    """Sign a token for `user` on `notebook` with `role`, valid until `expires` (epoch seconds),
    for the notebook's `incarnation`, issued at `issued` (epoch milliseconds).

    Raises `ValueError` for claims that could never verify (empty secret, unknown role, a user
    without a string id, over-long fields); the HTTP layer validates its input before calling.
    """
    if not secret:
        raise ValueError("the signing secret must not be empty")
    if not isinstance(notebook, str) or not 1 <= len(notebook) <= MAX_NOTEBOOK_ID:
        raise ValueError(f"notebook must be a string of 1 to {MAX_NOTEBOOK_ID} characters")
    if role not in ROLES:
        raise ValueError("role must be 'viewer' or 'editor'")
    if isinstance(expires, bool) or not isinstance(expires, int):
        raise ValueError("expires must be an integer (epoch seconds)")
    if isinstance(issued, bool) or not isinstance(issued, int) or issued < 0:
        raise ValueError("issued must be a non-negative integer (epoch milliseconds)")
    if not isinstance(incarnation, str) or not 1 <= len(incarnation) <= MAX_INCARNATION:
        raise ValueError(f"incarnation must be a string of 1 to {MAX_INCARNATION} characters")
    claims = {
        "e": expires,
        "g": incarnation,
        "i": issued,
        "n": notebook,
        "r": role,
        "u": _check_user(user),
    }
    canonical = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    payload = _b64encode(canonical.encode("utf-8"))
    return f"{VERSION}.{payload}.{_b64encode(_signature(secret, payload))}"


def verify_token(secret: bytes, token: str, *, now: float, leeway: float = 30) -> TokenClaims:
    """Check `token`'s signature and expiry and return its claims.

    `now` is the current time in epoch seconds (passed in so that callers and tests control the
    clock). A token is accepted while `now <= expires + leeway`.

    Raises `TokenError` with code `token_malformed` (not a token of ours), `token_bad_signature`
    (signed with another secret or altered) or `token_expired`.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenError("token_malformed", "The token is not a valid Agora token.")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION:
        raise TokenError("token_malformed", "The token is not a valid Agora token.")
    _, payload, sig_text = parts
    try:
        signature = _b64decode(sig_text)
        raw = _b64decode(payload)
    except ValueError:
        raise TokenError("token_malformed", "The token is not valid base64url.") from None
    if len(signature) != hashlib.sha256().digest_size:
        raise TokenError("token_malformed", "The token's signature has the wrong length.")
    if not hmac.compare_digest(signature, _signature(secret, payload)):
        raise TokenError("token_bad_signature", "The token's signature does not match.")
    try:
        claims = json.loads(raw.decode("utf-8"))
        if not isinstance(claims, dict):
            raise ValueError("claims must be an object")
        notebook, role, expires = claims["n"], claims["r"], claims["e"]
        if not isinstance(notebook, str) or role not in ROLES:
            raise ValueError("bad notebook or role")
        if isinstance(expires, bool) or not isinstance(expires, int):
            raise ValueError("bad expiry")
        issued, incarnation = claims.get("i", 0), claims.get("g", "")
        if isinstance(issued, bool) or not isinstance(issued, int) or not isinstance(incarnation, str):
            raise ValueError("bad issue time or incarnation")
        user = _check_user(claims["u"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise TokenError("token_malformed", "The token's claims are not readable.") from None
    if now > expires + leeway:
        raise TokenError("token_expired", "The token has expired.")
    return TokenClaims(
        notebook=notebook,
        user=user,
        role=cast(Role, role),
        expires=expires,
        issued=issued,
        incarnation=incarnation,
    )
