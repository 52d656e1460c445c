"""Which deploy-key object a stack registers with a provider account (pure).

Hetzner and DigitalOcean refuse a second SSH key with the same public key in one account, so two
stacks (prod and dev) sharing an account cannot both create the deploy key. A stack therefore
reuses a key that already exists with the same fingerprint unless it is the stack's own (created by
an earlier `up` of this stack, which keeps managing it), or the key the topology names
(`ssh.existing_keys.<provider>`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from infra.topology import TopologyError


@dataclass(frozen=True)
class AccountKey:
    """An SSH key registered in a provider account, as the provider's key listing returns it."""

    id: str
    name: str
    fingerprint: str  # MD5, colon-separated hex ("3b:16:bf:...")
    labels: Mapping[str, str] = field(default_factory=dict)


def md5_fingerprint(public_key: str) -> str:
    """The MD5 fingerprint Hetzner and DigitalOcean show for an OpenSSH public key line (ValueError
    for anything else; the topology has checked the deploy key's shape)."""
    try:
        blob = base64.b64decode(public_key.split()[1], validate=True)
    except (IndexError, binascii.Error):
        raise ValueError(f"not an OpenSSH public key line: {public_key[:40]!r}") from None
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def key_to_reuse(
    account_keys: Sequence[AccountKey],
    public_key: str,
    *,
    is_own: Callable[[AccountKey], bool],
    named: str | None = None,
    provider: str = "",
) -> AccountKey | None:
    """The existing key this stack should use instead of creating one, or None to create (or keep) its own.

    `is_own(key) -> bool` says whether a key is this stack's own (its label or name). `named`
    (ssh.existing_keys.<provider>) picks a key by name or id; TopologyError naming that field when
    the account has no such key.
    """
    if named is not None:
        for key in account_keys:
            if named in (key.name, key.id):
                return key
        names = ", ".join(sorted(k.name for k in account_keys)) or "none"
        raise TopologyError(
            [f"ssh.existing_keys.{provider}: no SSH key {named!r} in the account (keys: {names})"]
        )
    fingerprint = md5_fingerprint(public_key)
    for key in account_keys:
        if key.fingerprint == fingerprint and not is_own(key):
            return key
    return None
