"""Refiners: coarse detector maps to pixel-level maps (see base.py)."""
