"""`edgeprune build`: recipes, the plan a device profile implies, resumable stages, the report."""
