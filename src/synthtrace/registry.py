"""Extension points: a name → the object that serves it, for built-ins and plugins alike.

Each registry maps names to references in the entry-point form `package.module:Attribute`.
Built-ins are listed here; plugins add theirs as entry points of the registry's group in their
own package metadata, e.g. in a plugin's pyproject.toml:

    [project.entry-points."synthtrace.recipes"]
    word-problems = "my_package.recipes:WordProblems"

Both go through the same `load`. Entry points are scanned only for a name that is not built in
(reading every installed distribution's metadata costs start-up time), and once per process.
"""

from __future__ import annotations

import importlib
from typing import Any

# Built-in recipes: names a plugin cannot take over. (The built-in providers are listed with the
# providers, in `llm.providers`.)
BUILTIN_RECIPES = {
    "completions": "synthtrace.recipes.completions:CompletionsRecipe",
    "medec": "synthtrace.recipes.medec.recipe:MedecRecipe",
    "science": "synthtrace.recipes.science.recipe:ScienceRecipe",
    "math": "synthtrace.recipes.math_recipe:MathRecipe",
}
class NotRegistered(LookupError):
    """A name no built-in and no installed plugin provides."""


class Registry:
    """Names → `module:attr` references: the built-ins first, then the entry points of `group`."""

    def __init__(self, group: str, builtin: dict[str, str], what: str):
        self.group = group
        self.builtin = builtin
        self.what = what  # "recipe", "provider": for messages
        self._plugins: dict[str, Any] | None = None
        self._loaded: dict[str, Any] = {}

    def plugins(self) -> dict[str, Any]:
        """Installed entry points of this group, by name (read once)."""
        if self._plugins is None:
            from importlib.metadata import entry_points

            self._plugins = {ep.name: ep for ep in entry_points(group=self.group) if ep.name not in self.builtin}
        return self._plugins

    def names(self) -> list[str]:
        return [*self.builtin, *sorted(self.plugins())]

    def __contains__(self, name: str) -> bool:
        return name in self.builtin or name in self.plugins()

    def reference(self, name: str) -> str:
        """Where `name` lives (`module:attr`); raises NotRegistered with the known names."""
        if name in self.builtin:
            return self.builtin[name]
        ep = self.plugins().get(name)
        if ep is None:
            raise NotRegistered(self.unknown(name))
        return str(ep.value)

    def load(self, name: str) -> Any:
        """The object registered as `name`, imported on first use."""
        obj = self._loaded.get(name)
        if obj is None:
            obj = self._loaded[name] = load_reference(self.reference(name))
        return obj

    def unknown(self, name: str) -> str:
        """What to say of a name that is not registered: the known names, and the closest one."""
        import difflib

        known = self.names()
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"unknown {self.what} {name!r} (known: {', '.join(known)}){hint}"


def load_reference(ref: str) -> Any:
    """Import `package.module:Attr.Sub` and return the attribute."""
    module_name, _, attr = ref.partition(":")
    obj = importlib.import_module(module_name)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


RECIPES = Registry("synthtrace.recipes", BUILTIN_RECIPES, "recipe")
