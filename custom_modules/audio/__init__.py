"""Signals and files: levels and gains, loudness, room impulse responses, audio file I/O, seeding.

The bottom layer: imports nothing else of ``custom_modules`` and is the only part
``data_prepare`` may use.
"""
