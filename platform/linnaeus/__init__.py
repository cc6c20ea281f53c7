"""Linnaeus: BioCLIP as a scalable platform on Ray (ingest, stream, train, evaluate, serve).

Importing the package does nothing but define names: no I/O, no Ray, no model loading.
"""

__version__ = "0.1.0"
