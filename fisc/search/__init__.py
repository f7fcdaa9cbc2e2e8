"""Exact L2 search (:mod:`fisc.search.exact`) and the choice of its CPU backend
(:mod:`fisc.search.choose`)."""

import logging

# faiss's loader logs at INFO each SIMD build it tries, with a ModuleNotFoundError for every one
# the wheel lacks: noise in every evaluation's output. Its warnings still show; a level set by
# the user before fisc is imported is kept.
if logging.getLogger("faiss.loader").level == logging.NOTSET:
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
