"""Mutation testing: does a deliberate bug fail a test? (docs/development.md)."""
