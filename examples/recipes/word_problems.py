"""Word problems with a checked final number.

Up to `--samples` answers per problem, each its own sample at a rising temperature; the first
whose final number equals the reference is kept, and a problem none of them solves is rejected
with the numbers they gave.

    synthtrace run examples/recipes/word_problems.py -i examples/recipes/word_problems.jsonl -o runs/wp
"""

import re
from dataclasses import dataclass

import synthtrace

SYSTEM = "Solve the problem step by step. End with one last line: `Answer: <number>`."
ANSWER = re.compile(r"answer:\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)


class WordProblems(synthtrace.Recipe):
    """Word-problem solutions whose final number matches the reference."""

    @dataclass(frozen=True)
    class Options:
        samples: int = synthtrace.option(4, "Answers tried per problem.", flags=("--samples", "-k"), min=1, max=8)
        max_tokens: int = synthtrace.option(1024, "Max tokens of each answer.", min=32)

    async def process(self, record, llm):
        question, expected = record.data["question"], float(record.data["answer"])
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]
        given = []
        for k in range(self.options.samples):
            reply = await llm.chat(messages, sample=k, temperature=round(0.2 + 0.3 * k, 2),
                                   max_tokens=self.options.max_tokens)
            found = ANSWER.findall(reply.text)
            number = float(found[-1].replace(",", "")) if found else None
            if number is not None and abs(number - expected) < 1e-9:
                work = reply.text[:reply.text.lower().rindex("answer:")].strip()
                reasoning = "\n\n".join(t for t in (reply.reasoning, work) if t)
                return [{"id": record.id, "question": question, "reasoning": reasoning,
                         "answer": f"Answer: {found[-1]}", "attempts": k + 1}]
            given.append(number)
        raise synthtrace.Rejected(f"no answer matched {expected:g} in {len(given)} tries", answers=given)

    def to_sft(self, row):
        return synthtrace.ChatExample(user=row["question"], answer=row["answer"], reasoning=row["reasoning"],
                                      system=SYSTEM)
