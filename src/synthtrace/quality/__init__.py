"""Reusable quality tools for any recipe: text similarity, judges, grading, heuristics."""
