"""Benchmarks: a separate suite from the tests. ``python -m bench`` runs them all."""
