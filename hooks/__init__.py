"""Hooks: each owns one connection or external tool and nothing else."""
