"""The verifier as a reward function for reinforcement learning (TRL's GRPO, or any trainer alike).

    from trl import GRPOTrainer
    from synthtrace.verify import verifier_reward
    trainer = GRPOTrainer(model, reward_funcs=verifier_reward(), train_dataset=problems)  # with a "reference" column

Each completion is checked against its row's reference: 1.0 when `correct`, 0.0 when `incorrect`
or when the answer states nothing to check (`unparseable_answer`: the model's own doing). When the
check itself could not be made — `timeout`, `error`, `unparseable_reference` — the reward is None,
not 0: TRL leaves such a reward out rather than punish the model for the verifier's trouble.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

from synthtrace.verify.verdict import Ladder, Verdict, Verification

PUNISHED = (Verdict.INCORRECT, Verdict.UNPARSEABLE_ANSWER)


def verifier_reward(ladder: Ladder | None = None, reference: str = "reference") -> Callable[..., list[float | None]]:
    """A reward function `(completions, **columns) -> [float | None]` that checks each completion
    against `columns[reference]` with `ladder` (default: the default ladder). Its `verdicts` attribute
    keeps the last batch's `Verification`s, for logging."""
    if ladder is None:
        from synthtrace.verify import default_ladder

        ladder = default_ladder()

    def reward(completions: list[Any], **columns: Any) -> list[float | None]:
        if reference not in columns:
            raise KeyError(f"verifier_reward needs a {reference!r} column in the training data "
                           f"(it has: {', '.join(sorted(columns)) or 'none'})")
        texts = [_text(c) for c in completions]
        verdicts = _run(_check_all(ladder, texts, [str(r) for r in columns[reference]]))
        reward.verdicts = verdicts  # type: ignore[attr-defined]
        return [1.0 if v.verdict is Verdict.CORRECT else 0.0 if v.verdict in PUNISHED else None for v in verdicts]

    reward.__name__ = "verifier"  # how TRL names its column in the logs
    reward.verdicts = []  # type: ignore[attr-defined]
    return reward


async def _check_all(ladder: Ladder, texts: list[str], references: list[str]) -> list[Verification]:
    return list(await asyncio.gather(*(ladder.check(t, r) for t, r in zip(texts, references))))


def _run(coro: Any) -> Any:
    """Run `coro` to the end, whether or not the caller's thread already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a notebook's loop: use a thread of our own
        return pool.submit(asyncio.run, coro).result()


def _text(completion: Any) -> str:
    """A completion as text: TRL passes a string, or (conversational data) a list of messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content") or "")
    return str(completion)
