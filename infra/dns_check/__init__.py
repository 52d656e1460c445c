"""`spaced dns plan` and `spaced dns check`: the records a stack wants, and whether DNS serves them.

- `plan.py` — pure: stack file (+ optional `pulumi stack output --json`) -> the planned records, computed
  by the same `infra.plans.records.plan_records` the Pulumi program calls.
- `resolve.py` — I/O: one DNS query with bounded retries and timeouts (dnspython).
- `compare.py` — pure: planned records + answers -> findings (ok, missing, wrong, extra, ...).
- `commands.py` — the two CLI subcommands; failures raise the CLI's `CliError`.

Nothing here imports Pulumi: the command runs on any machine with the project installed.
"""
