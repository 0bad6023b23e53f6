"""Bulle scanner daemon: BLE advertisements in, consented sightings out."""
