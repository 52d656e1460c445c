"""infra/config.py: where credentials may come from."""

from __future__ import annotations

import pulumi

from infra.config import credentials_available


def test_credentials_from_config_or_environment() -> None:
    pulumi.runtime.set_all_config({"hcloud:token": "from-config", "gcp:project": "p"}, ["hcloud:token"])
    try:
        found = credentials_available({"DIGITALOCEAN_TOKEN": "from-env", "AWS_ACCESS_KEY_ID": ""})
    finally:
        pulumi.runtime.set_all_config({}, [])
    assert found["hetzner"] and found["digitalocean"] and found["gcp"]
    assert not found["aws"]  # an empty variable is not a credential
    assert not found["ionos"] and not found["ssh"]
