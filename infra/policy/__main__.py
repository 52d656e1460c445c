"""Entry point of the policy pack: `pulumi preview --policy-pack infra/policy`."""

import sys
from pathlib import Path

# The CLI runs this file as a script from infra/policy; make the repository root importable so the
# pack uses the same `infra` package as the program (also when the project is not pip-installed).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pulumi_policy import EnforcementLevel, PolicyPack

from infra.policy.pack import PACK_NAME, build_policies

PolicyPack(
    name=PACK_NAME,
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
)
