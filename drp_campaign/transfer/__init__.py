"""Data movement between sites behind a Rucio-shaped interface."""
