"""Data: open the raw extract, check it against the contract, clean it, cut the timeline."""
