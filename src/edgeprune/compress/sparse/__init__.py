"""N:M (2:4) sparsity: one-shot magnitude / Wanda / SparseGPT (``oneshot.py``, ``step: sparsify``),
AST sparse training (``ast.py``, ``step: sparse_train``) and the packed artifact (``packed.py``)."""
