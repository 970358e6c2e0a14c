"""Spawn benchmark (issue #4): see run.py."""
