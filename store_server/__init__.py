"""Bulle store server: consent-first presence, greetings and stock checks."""
