"""What the GitHub workflows run, as commands a person runs too (`spaced ci ...`,
`python -m infra.ci.affected ...`): no pipeline logic lives only in YAML."""
