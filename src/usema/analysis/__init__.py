"""Analyses of trained models beyond their scores (attention dispersion)."""
