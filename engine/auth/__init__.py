"""Authentication: API keys for platforms (`keys`), signed user tokens for browsers (`tokens`) and
the process secret that signs them (`secret`)."""

from engine.auth.keys import KeyInfo, KeyStore
from engine.auth.secret import load_or_create_secret
from engine.auth.tokens import ROLES, TokenClaims, TokenError, mint_token, verify_token

__all__ = [
    "ROLES",
    "KeyInfo",
    "KeyStore",
    "TokenClaims",
    "TokenError",
    "load_or_create_secret",
    "mint_token",
    "verify_token",
]
