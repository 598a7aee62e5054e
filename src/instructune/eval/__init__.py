"""Judge a model by what it generates."""
