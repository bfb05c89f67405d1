"""What `edgeprune build` runs: recipes, the plan a device profile implies, resumable stages, the report.

The entry point is ``edgeprune.build(target=..., model=..., recipe=...)``.
"""
