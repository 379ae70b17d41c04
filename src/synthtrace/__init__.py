"""synthtrace: verified reasoning-trace training data from your own sources, with any LLM."""

__version__ = "0.1.0"
