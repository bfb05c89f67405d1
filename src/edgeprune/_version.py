"""edgeprune's version, in a module of its own at the bottom of the package: ``edgeprune.__version__``
re-exports it, and modules below the root (the ONNX exporter's metadata) read it here rather than
importing the root package, which sits above every layer (its ``build()`` runs the pipeline)."""

__version__ = "0.1.0"
