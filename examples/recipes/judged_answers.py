"""Explanations kept only when a judge scores them well against a rubric.

One model writes an explanation with its reasoning; a second (`--judge`, default: the same model)
scores it 1-10 against the rubric, as structured output. Explanations at or above `--min-score`
become rows with the judge's verdict beside them; the rest are rejected with the score and reason.

    synthtrace run examples/recipes/judged_answers.py -i examples/recipes/questions.jsonl -o runs/judged \
        --judge judge --min-score 7
"""

from dataclasses import dataclass

from pydantic import BaseModel, Field

import synthtrace

SYSTEM = "You explain things to a curious student: think it through first, then answer in a short paragraph."
RUBRIC = """Score the explanation from 1 to 10 against this rubric:
- correct: nothing in it is false (a false statement caps the score at 3);
- complete: it answers the question that was asked, all of it;
- clear: a student could follow it without looking anything up.

Question: {question}

Explanation: {answer}"""


class Verdict(BaseModel):
    score: int = Field(ge=1, le=10, description="1 (useless) to 10 (could not be better)")
    reason: str = Field(description="One sentence: what decided the score.")


class JudgedAnswers(synthtrace.Recipe):
    """Explanations that a judge model scores at or above a threshold."""

    prompt_version = "1"

    @dataclass(frozen=True)
    class Options:
        judge: str | None = synthtrace.option(None, "Model that scores the explanations (default: --model).")
        min_score: int = synthtrace.option(7, "Lowest judge score that keeps an explanation.", min=1, max=10)
        max_tokens: int = synthtrace.option(1024, "Max tokens of each explanation.", min=32)

    async def process(self, record, llm):
        question = record.data["question"]
        reply = await llm.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
                               temperature=0.7, max_tokens=self.options.max_tokens)
        rubric = RUBRIC.format(question=question, answer=reply.text.strip())
        judged = await llm.chat([{"role": "user", "content": rubric}], model=self.options.judge, schema=Verdict,
                                temperature=0.0, max_tokens=256)
        verdict = judged.parsed
        if verdict.score < self.options.min_score:
            raise synthtrace.Rejected(f"judge score {verdict.score} < {self.options.min_score}: {verdict.reason}",
                                      score=verdict.score, judge=judged.model)
        return [{"id": record.id, "question": question, "reasoning": reply.reasoning or "", "answer": reply.text.strip(),
                 "judge": {"model": judged.provider_model, "score": verdict.score, "reason": verdict.reason}}]

    def to_sft(self, row):
        return synthtrace.ChatExample(user=row["question"], answer=row["answer"], reasoning=row["reasoning"],
                                      system=SYSTEM)
