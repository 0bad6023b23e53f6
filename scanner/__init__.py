"""Bulle scanner daemon: BLE advertisements in, consented sightings out."""

__version__ = "0.1.0"
