"""Every credential setting the README names reaches the provider that needs it.

Pulumi gives `<package>:*` stack config only to a package's *default* provider (pulumi-aws issues
1307 and 3259). The program creates explicit providers (one `aws.Provider` per region), so each
credential key of the README's table must arrive as an input of every explicit provider of its
package; keys of packages that only use the default provider need nothing from the program.
"""

from __future__ import annotations

import re

from tests.infra.fixtures.pulumi_mocks import is_secret, unwrap
from tests.infra.fixtures.topologies import REPO_ROOT
from tests.infra.program.test_program_stacks import run_stack


def readme_credential_keys() -> list[str]:
    """The config keys (`aws:accessKey`, ...) that the README's credentials table tells users to set."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index("| needed by | how |")
    table = text[start : text.index("\n\n", start)]
    keys = re.findall(r"pulumi config set (?:--secret )?([a-z0-9]+:[A-Za-z]+)", table)
    assert keys, "the README's credentials table names no config key"
    return list(dict.fromkeys(keys))


def camel(key: str) -> str:
    return key.split(":", 1)[1]


def test_every_readme_credential_reaches_every_explicit_provider_of_its_package() -> None:
    keys = readme_credential_keys()
    assert {"aws:accessKey", "aws:secretKey", "aws:profile"} <= set(keys)
    # Not credentials: the regional providers set their own region (aws:region serves Route 53).
    values = {key: f"value-of-{key}" for key in keys if not key.startswith("spaced:") and key != "aws:region"}
    mocks, _ = run_stack("prod", extra=values)
    explicit = [r for r in mocks.resources if r.typ.startswith("pulumi:providers:")]
    assert any(r.typ == "pulumi:providers:aws" for r in explicit), "prod has AWS nodes: regional providers"
    checked = 0
    for key, value in values.items():
        package = key.split(":", 1)[0]
        for provider in explicit:
            if provider.typ != f"pulumi:providers:{package}":
                continue
            assert unwrap(provider.inputs.get(camel(key))) == value, (provider.name, key)
            checked += 1
    assert checked >= 3


def test_secret_credentials_stay_secret_on_the_explicit_provider() -> None:
    mocks, _ = run_stack("prod", extra={"aws:secretKey": "s3cr3t"}, secrets=("aws:secretKey",))
    [provider] = mocks.of_type("pulumi:providers:aws")
    assert is_secret(provider.inputs["secretKey"]) and unwrap(provider.inputs["secretKey"]) == "s3cr3t"
