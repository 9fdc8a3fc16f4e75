"""The LT-MIA training lab: training data from many fine-tuning runs (:mod:`.generate`, over the
model families of :mod:`.families` and the corpora of :mod:`.corpora`), classifier training
(:mod:`.training`), transfer tables (:mod:`.evaluate`) and the reproduction of the shipped
classifier (:mod:`.recipes`). The attack's runtime (features, classifier, loading) is
:mod:`memlens.ltmia`.
"""
