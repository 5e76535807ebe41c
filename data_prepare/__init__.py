"""Manifest preparation for DNS Challenge, MUSAN, SLR26/SLR28 RIRs, LibriSpeech and plain folders."""
