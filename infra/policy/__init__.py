"""The Spaced policy pack: rules in `rules` (plain functions), pulumi_policy wiring in `pack`."""
