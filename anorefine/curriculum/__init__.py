"""Curricula: how the test stream of a category meets the refiner."""
