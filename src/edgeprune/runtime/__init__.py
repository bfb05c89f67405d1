"""Running and measuring models: generation loops now; the profiling harness lands with issue 9."""
