"""A planted set for decontamination and near-duplicate checks: generated documents, and copies of them.

    corpus = Corpus(seed=7)
    items = [corpus.document() for _ in range(200)]                # the "evaluation set"
    leaked = corpus.wrapped(corpus.reordered(items[0]))             # a training text holding one of them

Documents are 8–14 sentences of pseudo-words drawn from a Zipf-like vocabulary; half hold one of a
few boilerplate sentences that other documents share (as clinical notes share their vital-signs
lines), so that a clean document is not trivially clean. Everything is seeded: the same figures on
every machine.
"""

from __future__ import annotations

import random

BOILERPLATE = [
    "her temperature is 37 c pulse is 88 min respirations are 16 min and oxygen saturation is 98 on room air",
    "he has no history of serious illness and takes no medications other than a daily multivitamin tablet",
    "physical examination shows no abnormalities of the heart lungs or abdomen and the neurologic exam is normal",
    "the patient was given written instructions and asked to return to the clinic if the symptoms worsened",
]


class Corpus:
    """Documents of 8–14 sentences of pseudo-words (a Zipf-like vocabulary), half of them with a
    boilerplate sentence that other documents share."""

    def __init__(self, seed: int = 7):
        self.rnd = random.Random(seed)
        syllables = ["ka", "lo", "mi", "ten", "sor", "va", "pe", "dri", "nu", "ost", "ra", "bel", "qui", "fa", "zen"]
        self.vocab = sorted({"".join(self.rnd.choice(syllables) for _ in range(self.rnd.randint(1, 3)))
                             for _ in range(4000)})
        self.weights = [1 / (i + 1) for i in range(len(self.vocab))]

    def sentence(self) -> str:
        w = self.rnd.choices(self.vocab, self.weights, k=self.rnd.randint(10, 22))
        return " ".join(w).capitalize() + "."

    def document(self) -> str:
        sentences = [self.sentence() for _ in range(self.rnd.randint(8, 14))]
        if self.rnd.random() < 0.5:
            sentences.insert(self.rnd.randrange(len(sentences)), self.rnd.choice(BOILERPLATE).capitalize() + ".")
        return " ".join(sentences)

    def changed(self, text: str, k: int = 3) -> str:
        w = text.split()
        for _ in range(k):
            w[self.rnd.randrange(len(w))] = self.rnd.choice(["blue", "seven", "quietly", "table"])
        return " ".join(w)

    def reordered(self, text: str) -> str:
        sentences = [s for s in text.split(". ") if s]
        while len(sentences) > 1:
            shuffled = sentences[:]
            self.rnd.shuffle(shuffled)
            if shuffled != sentences:
                return ". ".join(shuffled)
        return text

    def wrapped(self, text: str) -> str:
        """As a training example holds it: inside a question, with words of its own around it."""
        return f"{self.sentence()} Consider the case below.\n\n{text}\n\n{self.sentence()}"
