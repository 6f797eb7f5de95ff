"""Tokens, API keys, the signing secret and the `agora keys` command (engine/auth, api/keys_cli)."""

from __future__ import annotations

import base64
import json
import multiprocessing
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from api.keys_cli import run_keys_command
from engine.auth import keys as keys_mod
from engine.auth.keys import KeyStore
from engine.auth.secret import load_or_create_secret
from engine.auth.tokens import TokenError, mint_token, verify_token

SECRET = b"s" * 32
USER = {"id": "u1", "name": "Ada", "color": "#e91e63"}


# ---- tokens ----------------------------------------------------------------------------------


def mint(secret: bytes, notebook: str, user: Any, role: str, expires: Any, **kw: Any) -> str:
    kw.setdefault("incarnation", "g1")
    kw.setdefault("issued", 1_700_000_000_000)
    return mint_token(secret, notebook, user, role, expires, **kw)


def test_token_carries_issue_time_and_incarnation() -> None:
    token = mint(SECRET, "nb", USER, "editor", 100, incarnation="abc", issued=1234)
    claims = verify_token(SECRET, token, now=0)
    assert (claims.issued, claims.incarnation) == (1234, "abc")
    with pytest.raises(ValueError):
        mint(SECRET, "nb", USER, "editor", 100, incarnation="")
    with pytest.raises(ValueError):
        mint(SECRET, "nb", USER, "editor", 100, issued=-1)


def test_token_round_trip() -> None:
    token = mint(SECRET, "nb-1", USER, "editor", 2_000_000_000)
    claims = verify_token(SECRET, token, now=1_999_999_000)
    assert claims.notebook == "nb-1"
    assert claims.user == USER
    assert claims.role == "editor"
    assert claims.expires == 2_000_000_000


def test_token_is_deterministic_and_url_safe() -> None:
    a = mint(SECRET, "nb", {"name": "Ada", "id": "u1"}, "viewer", 100)
    b = mint(SECRET, "nb", {"id": "u1", "name": "Ada"}, "viewer", 100)
    assert a == b
    assert set(a) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def test_token_name_defaults_to_id_and_unicode_user() -> None:
    token = mint(SECRET, "nb", {"id": "élève-7"}, "viewer", 100)
    assert verify_token(SECRET, token, now=0).user == {"id": "élève-7", "name": "élève-7"}
    token = mint(SECRET, "nb", {"id": "u", "name": "学生 🎓"}, "viewer", 100)
    assert verify_token(SECRET, token, now=0).user["name"] == "学生 🎓"


def test_token_longest_stays_well_under_url_limits() -> None:
    user = {"id": "é" * 256, "name": "🎓" * 200, "color": "#" * 32}
    token = mint(SECRET, "n" * 64, user, "editor", 2**40, incarnation="g" * 64, issued=2**50)
    assert len(token) < 2200
    assert verify_token(SECRET, token, now=0).user == user


def test_token_wrong_secret_is_bad_signature() -> None:
    token = mint(SECRET, "nb", USER, "viewer", 100)
    with pytest.raises(TokenError) as err:
        verify_token(b"other secret", token, now=0)
    assert err.value.code == "token_bad_signature"


def test_token_tampered_payload_is_bad_signature() -> None:
    token = mint(SECRET, "nb", USER, "viewer", 100)
    version, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["r"] = "editor"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, f"{version}.{forged}.{sig}", now=0)
    assert err.value.code == "token_bad_signature"


def test_token_flipped_signature_bit() -> None:
    token = mint(SECRET, "nb", USER, "viewer", 100)
    head, sig = token.rsplit(".", 1)
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, f"{head}.{flipped}", now=0)
    assert err.value.code == "token_bad_signature"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "garbage",
        "v1.a",
        "v2.abc.def",
        "v1.!!!.abc",
        "v1.abc.abc",
        "v1..",
        "v1.a.b.c",
        "x" * 5000,
        "v1.é.a",
    ],
)
def test_token_malformed(token: str) -> None:
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, token, now=0)
    assert err.value.code == "token_malformed"


def test_token_signed_but_unreadable_claims_is_malformed() -> None:
    # A payload signed with the right secret but not our claim shape (only a buggy minter could).
    from engine.auth import tokens

    payload = base64.urlsafe_b64encode(b'{"n": 1}').rstrip(b"=").decode()
    sig = base64.urlsafe_b64encode(tokens._signature(SECRET, payload)).rstrip(b"=").decode()
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, f"v1.{payload}.{sig}", now=0)
    assert err.value.code == "token_malformed"


def test_token_expiry_and_leeway() -> None:
    token = mint(SECRET, "nb", USER, "viewer", 1000)
    verify_token(SECRET, token, now=1000)
    verify_token(SECRET, token, now=1030)  # within the default 30 s leeway
    with pytest.raises(TokenError) as err:
        verify_token(SECRET, token, now=1030.5)
    assert err.value.code == "token_expired"
    with pytest.raises(TokenError):
        verify_token(SECRET, token, now=1001, leeway=0)
    verify_token(SECRET, token, now=1100, leeway=120)


def test_bad_signature_checked_before_expiry() -> None:
    token = mint(SECRET, "nb", USER, "viewer", 1)
    with pytest.raises(TokenError) as err:
        verify_token(b"x", token, now=10**9)
    assert err.value.code == "token_bad_signature"


@pytest.mark.parametrize(
    ("secret", "notebook", "user", "role", "expires"),
    [
        (b"", "nb", USER, "viewer", 1),
        (SECRET, "", USER, "viewer", 1),
        (SECRET, "nb", {"name": "no id"}, "viewer", 1),
        (SECRET, "nb", {"id": 5}, "viewer", 1),
        (SECRET, "nb", {"id": "u", "name": "x" * 201}, "viewer", 1),
        (SECRET, "nb", {"id": "u", "color": 3}, "viewer", 1),
        (SECRET, "nb", USER, "owner", 1),
        (SECRET, "nb", USER, "viewer", 1.5),
        (SECRET, "nb", USER, "viewer", True),
    ],
)
def test_mint_refuses_bad_claims(secret: bytes, notebook: str, user: dict, role: str, expires: int) -> None:
    with pytest.raises(ValueError):
        mint(secret, notebook, user, role, expires)


# ---- secret ----------------------------------------------------------------------------------


def test_secret_env_wins(tmp_path: Path) -> None:
    assert load_or_create_secret(tmp_path, "shared-secret") == b"shared-secret"
    assert not (tmp_path / "secret").exists()


def test_secret_created_once_with_mode_0600(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = load_or_create_secret(data, None)
    assert len(first) == 32
    assert stat.S_IMODE(os.stat(data / "secret").st_mode) == 0o600
    assert load_or_create_secret(data, "") == first  # empty env value counts as unset
    assert load_or_create_secret(data, None) == first
    assert [p.name for p in data.iterdir()] == ["secret"]  # no temp file left behind


def test_secret_empty_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"")
    with pytest.raises(ValueError):
        load_or_create_secret(tmp_path, None)


def _make_secret(path: str, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(load_or_create_secret(Path(path), None))


def test_secret_race_between_processes_agrees(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_make_secret, args=(str(tmp_path), queue)) for _ in range(6)]
    for p in procs:
        p.start()
    results = {queue.get(timeout=10) for _ in procs}
    for p in procs:
        p.join(10)
    assert len(results) == 1
    assert results == {(tmp_path / "secret").read_bytes()}


# ---- API keys --------------------------------------------------------------------------------


def test_env_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, ["alpha", " beta ", ""])
    assert store.verify("alpha")
    assert store.verify("beta")
    assert not store.verify("")
    assert not store.verify("gamma")
    assert not store.verify("alph")
    assert store.list() == []


def test_create_list_verify_revoke(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, [])
    key_id, api_key = store.create("moodle")
    assert api_key.startswith("agora_") and len(api_key) > 40
    assert store.verify(api_key)
    infos = store.list()
    assert [(i.id, i.name, i.revoked) for i in infos] == [(key_id, "moodle", None)]
    assert abs(infos[0].created - time.time()) < 5
    # Only the hash is stored.
    raw = (tmp_path / "keys.json").read_text()
    assert api_key not in raw
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    assert store.revoke(key_id)
    assert not store.verify(api_key)
    assert store.list()[0].revoked is not None
    assert not store.revoke(key_id)  # already revoked
    assert not store.revoke("nope")


def test_revoke_by_name_and_duplicate_names(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, [])
    _, k1 = store.create("canvas")
    with pytest.raises(ValueError):
        store.create("canvas")
    with pytest.raises(ValueError):
        store.create("   ")
    assert store.revoke("canvas")
    assert not store.verify(k1)
    _, k2 = store.create("canvas")  # the name is free again once revoked
    assert store.verify(k2)
    assert len(store.list()) == 2


def test_revocation_by_another_process_is_seen(tmp_path: Path, monkeypatch) -> None:
    server = KeyStore(tmp_path, [])
    cli = KeyStore(tmp_path, [])
    key_id, api_key = cli.create("lms")
    time.sleep(keys_mod.RELOAD_INTERVAL + 0.05)
    assert server.verify(api_key)  # created elsewhere, picked up
    cli.revoke(key_id)
    deadline = time.monotonic() + 10.0  # promised within a second; tenfold margin for busy machines
    while server.verify(api_key):
        assert time.monotonic() < deadline, "revocation not seen within ten seconds"
        time.sleep(0.05)


def test_corrupt_keys_file_keeps_last_good_set(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, [])
    _, api_key = store.create("x")
    (tmp_path / "keys.json").write_text("{not json")
    time.sleep(keys_mod.RELOAD_INTERVAL + 0.05)
    assert store.verify(api_key)


def test_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_keys_command(tmp_path, "create", "moodle", None) == 0
    out = capsys.readouterr().out
    api_key = next(w for w in out.split() if w.startswith("agora_"))
    assert KeyStore(tmp_path, []).verify(api_key)
    assert run_keys_command(tmp_path, "list", None, None) == 0
    out = capsys.readouterr().out
    assert "moodle" in out and api_key not in out
    key_id = KeyStore(tmp_path, []).list()[0].id
    assert key_id in out
    assert run_keys_command(tmp_path, "revoke", None, key_id) == 0
    assert not KeyStore(tmp_path, []).verify(api_key)
    assert run_keys_command(tmp_path, "revoke", None, key_id) == 1
    assert run_keys_command(tmp_path, "create", None, None) == 2
    assert run_keys_command(tmp_path, "create", "moodle", None) == 0  # revoked name reusable
    assert run_keys_command(tmp_path, "create", "moodle", None) == 2  # active duplicate
    assert run_keys_command(tmp_path / "empty", "list", None, None) == 0
    assert "No API keys" in capsys.readouterr().out
