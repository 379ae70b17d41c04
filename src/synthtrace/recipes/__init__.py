"""The built-in recipes, one module (or small folder) each: prompts, parsing, verification.

They are written against the same contract as a user's recipe (`synthtrace.recipe`) and registered
the way a plugin is (`synthtrace.registry.BUILTIN_RECIPES`).
"""
