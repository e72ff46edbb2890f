"""childes-compare: child-like error types in model stories vs CHILDES children, and the loss-to-age test."""
