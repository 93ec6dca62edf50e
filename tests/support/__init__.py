"""Helpers shared by the tests: runs of the real sweep process, result folders, resume scenarios."""
