"""The review web page and its files: the worklist folder (:mod:`.worklist`), the append-only decision
database (:mod:`.db`), the server-rendered pages (:mod:`.pages`) and the FastAPI application
(:mod:`.app`, needs the ``review`` extra: ``pip install 'medsure[review]'``).

Nothing here imports FastAPI at package import, so ``medsure triage`` and ``medsure audit`` work
without the extra.
"""
