"""Shared building blocks of the sb-enhance recipes (levels, RIRs, samplers, mixer, models...)."""
