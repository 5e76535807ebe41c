"""Offline demo corpus generator: ``python -m data_prepare.demo --out data/demo``.

``corpus`` drives the generation (:func:`data_prepare.demo.corpus.generate_demo_corpus`);
``speech`` (espeak-ng voices), ``text``, ``noise``, ``rooms`` (simulated RIRs),
``layout`` (the file plan) and ``tasks`` (one file each) are its parts.
"""
