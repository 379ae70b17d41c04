"""science: scientific passages → self-contained questions → natural reasoning traces → answers."""
