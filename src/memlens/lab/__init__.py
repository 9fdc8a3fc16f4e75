"""Whole studies built on the library (nothing in the library imports them):

* :mod:`.demo`: ``memlens demo``, tiny causal LMs trained from scratch on the PII testbed;
* :mod:`.demo_real`: ``memlens demo --base``, the same on a real pretrained base (full / LoRA);
* :mod:`.demo_diffusion`: ``memlens demo --family diffusion``, SAMA on tiny masked diffusion LMs;
* :mod:`.ltmia`: the LT-MIA training lab (data generation, classifier training, transfer tables).
"""
