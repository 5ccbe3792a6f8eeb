"""One module per loss term, each with its formula in the docstring."""
