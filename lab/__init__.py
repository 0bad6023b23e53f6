"""Bulle's lab: the store simulation, the radio model, the accuracy lab and the demo store.

It lives beside the two programs and ships in neither wheel: a store server installed from its
wheel runs without it, and ``store-server demo`` / ``store-server lab`` work from a checkout.
"""
