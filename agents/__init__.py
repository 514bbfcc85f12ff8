"""Agents that choose the server's credit vector: the paper's GAA, SB3 algorithms, fixed rules."""
