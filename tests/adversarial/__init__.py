"""Adversarial suite: abusive clients, backend faults, integrity under load, leaks."""
