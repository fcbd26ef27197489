"""ed25519 keys and signatures with the `sig_alg` rules (SPEC §3).

Keys and signatures travel as text: `ed25519:<lowercase hex>`. Verification goes
through libsodium (PyNaCl), which rejects non-canonical S values and small-order
public keys and R points, the classic ed25519 malleability holes.

Key *generation* needs randomness, which the core does not have: callers pass a
32-byte seed that an adapter drew from the OS.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import NewType

import nacl.exceptions
import nacl.signing

from ledger_core.errors import BadSignature, UnknownSigAlg

PublicKeyText = NewType("PublicKeyText", str)
SignatureText = NewType("SignatureText", str)

SIG_ALGS: tuple[str, ...] = ("ed25519",)
_KEY_RE = re.compile(r"([a-z0-9-]+):([0-9a-f]*)")


def _parse(text: object, what: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise BadSignature(f"{what} must be a string like 'ed25519:<hex>'")
    match = _KEY_RE.fullmatch(text)
    if not match:
        raise BadSignature(f"{what} {text[:80]!r} is not '<alg>:<lowercase hex>'")
    alg, hexpart = match.groups()
    if alg not in SIG_ALGS:
        raise UnknownSigAlg(f"{what} uses unknown algorithm {alg!r}; accepted: {SIG_ALGS}")
    if len(hexpart) != 2 * size:
        raise BadSignature(f"{what} must hold {size} bytes ({2 * size} hex digits)")
    return bytes.fromhex(hexpart)


def check_sig_alg(sig_alg: object, key: PublicKeyText | None = None) -> str:
    """Return the effective algorithm; reject unknown ones and contradictions with the key.

    An absent `sig_alg` means ed25519.
    """
    alg = "ed25519" if sig_alg is None else sig_alg
    if alg not in SIG_ALGS:
        raise UnknownSigAlg(f"unknown sig_alg {sig_alg!r}; accepted: {', '.join(SIG_ALGS)}")
    if key is not None and not str(key).startswith(f"{alg}:"):
        raise UnknownSigAlg(f"sig_alg {alg!r} contradicts the key type of {str(key)[:20]}…")
    return str(alg)


def parse_public_key(text: object) -> bytes:
    """Raw 32 bytes of an `ed25519:<hex>` public key."""
    return _parse(text, "public key", 32)


def parse_signature(text: object) -> bytes:
    """Raw 64 bytes of an `ed25519:<hex>` signature."""
    return _parse(text, "signature", 64)


def signature_text(raw: bytes) -> SignatureText:
    if len(raw) != 64:
        raise BadSignature(f"an ed25519 signature is 64 bytes, not {len(raw)}")
    return SignatureText(f"ed25519:{raw.hex()}")


def verify(public_key: PublicKeyText, message: bytes, signature: bytes) -> None:
    """Raise `BadSignature` unless `signature` is a valid, canonical ed25519 signature."""
    raw_key = parse_public_key(public_key)
    if len(signature) != 64:
        raise BadSignature(f"an ed25519 signature is 64 bytes, not {len(signature)}")
    try:
        nacl.signing.VerifyKey(raw_key).verify(message, signature)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.CryptoError) as exc:
        raise BadSignature("signature does not verify under the actor's key") from exc


@dataclass(frozen=True)
class SigningKey:
    """A private ed25519 key. `repr` never shows the seed."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise BadSignature("an ed25519 seed is 32 bytes")

    def __repr__(self) -> str:
        return f"SigningKey(public_key={self.public_key!r})"

    @cached_property
    def _nacl(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @cached_property
    def public_key(self) -> PublicKeyText:
        return PublicKeyText(f"ed25519:{bytes(self._nacl.verify_key).hex()}")

    def sign(self, message: bytes) -> bytes:
        """Raw 64-byte detached signature of `message`."""
        return self._nacl.sign(message).signature
