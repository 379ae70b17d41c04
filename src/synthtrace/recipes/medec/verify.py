"""Critic verdicts checked against MEDEC's ground truth — verified, not rationalised.

A verdict passes when its error flag is right and, on an error note, it names the erroneous
sentence and corrects it well enough. The sentence check tolerates MEDEC's imperfect sentence
splits: a neighbouring id whose text holds most of the reference error sentence also counts. The
correction must reach `min_similarity` ROUGE-1 F against the reference correction *and* contain
at least half of the words the reference correction introduced: copying the wrong sentence back
scores a high ROUGE-1 (most words are shared) but fails the second test.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from synthtrace.quality.similarity import containment, novel_token_recall, rouge1_f
from synthtrace.recipes.medec.data import MedecCase
from synthtrace.verify import Verdict
from synthtrace.verify import Verification as Checked

DEFAULT_MIN_SIMILARITY = 0.5
MIN_NOVEL_RECALL = 0.5


@dataclass(slots=True)
class Verification:
    verified: bool
    flag_ok: bool
    sentence_ok: bool | None = None
    correction_rouge1: float | None = None
    correction_novel_recall: float | None = None
    problem: str | None = None

    @property
    def verdict(self) -> Checked:
        """The same check as the typed verdict every verifier gives (`synthtrace.verify`)."""
        if self.verified:
            return Checked(Verdict.CORRECT, "matches the ground truth", "medec")
        return Checked(Verdict.INCORRECT, self.problem or "does not match the ground truth", "medec")

    def to_dict(self) -> dict[str, Any]:
        fields = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items() if v is not None}
        return {**fields, "verdict": self.verdict.verdict.value, "rung": "medec"}


def sentence_matches(predicted: int, case: MedecCase) -> bool:
    truth, sentences = case.error_sentence_id, case.error_sentences or []
    if predicted == truth:
        return True
    if abs(predicted - truth) != 1 or not (0 <= predicted < len(sentences)):
        return False
    text = sentences[predicted]
    # the reference error sentence straddles a bad split: accept the half that holds the error
    return containment(case.error_sentence, text) >= 0.6 or (
        containment(text, case.error_sentence) >= 0.8 and novel_token_recall(text, case.error_sentence, case.corrected_sentence) > 0
    )


def verify_critic_verdict(error_found: bool, sentence_id: int, corrected: str | None, case: MedecCase,
                          on_error_note: bool, min_similarity: float = DEFAULT_MIN_SIMILARITY) -> Verification:
    if not on_error_note:
        if error_found:
            return Verification(False, False, problem=f"flagged sentence {sentence_id} in a correct note")
        return Verification(True, True)
    if not error_found:
        return Verification(False, False, problem="missed the error (verdict: correct)")
    if not sentence_matches(sentence_id, case):
        return Verification(False, True, False,
                            problem=f"wrong sentence: {sentence_id}, expected {case.error_sentence_id}")
    rouge = rouge1_f(corrected, case.corrected_sentence)
    novel = novel_token_recall(corrected, case.corrected_sentence, case.error_sentence)
    ok = rouge >= min_similarity and novel >= MIN_NOVEL_RECALL
    problem = None if ok else (f"poor correction: ROUGE-1 {rouge:.2f} (min {min_similarity}), "
                               f"{novel:.0%} of the corrected words")
    return Verification(ok, True, True, rouge, novel, problem)
