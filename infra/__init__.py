"""Spaced infrastructure toolkit: topology model, pure plans, thin Pulumi layer, application stack."""
