"""The end of the chain: the paper's Table 1 (`table`) and the figures of the report (`figures`)."""
