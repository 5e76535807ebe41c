"""Using trained runs: run loading, file enhancement, chunked audio, speaker extraction.

Real-time streaming of the UNet-TCM lives in ``custom_modules.streaming``.
"""
