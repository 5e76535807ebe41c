"""Scoring: metrics (SNR, SI-SNR, STOI, PESQ, BSS Eval SDR, wSDR), model complexity, plots."""
