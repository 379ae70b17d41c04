"""`synthtrace train` and the `hf:` backend on a tiny Qwen3-shaped model built here (nothing downloaded).

The tiny model has random weights and a tokenizer trained on the examples, so the assertions are
about machinery — masks, loss going down, files, resumption, the adapter changing the model — and
never about the quality of its text.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # set before transformers is imported: no hub, ever
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
for lib in ("torch", "transformers", "trl", "peft", "datasets"):
    pytest.importorskip(lib)

import torch
from conftest import arun
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from synthtrace.cli import main as cli_main
from synthtrace.config import Config
from synthtrace.engine.gateway import Gateway
from synthtrace.engine.journal import Journal
from synthtrace.export.sft import render
from synthtrace.llm.providers import resolve_model
from synthtrace.recipe import ChatExample
from synthtrace.recipes.medec.prompts import CRITIC_SYSTEM, critic_user, render_verdict
from synthtrace.train.lora import CONFIG_FILE, TrainError, TrainOptions, train
from synthtrace.train.sft import IGNORE, TrainDataError, collate, encode, load_examples
from synthtrace.train.tiny import build_tiny_model

CASES = [
    (["A 54-year-old man has crushing chest pain.", "ECG shows ST elevation in II, III and aVF.",
      "He is given aspirin and sent for angiography."], None,
     "The ECG points to an inferior infarction; aspirin and angiography are the right plan. Nothing is wrong."),
    (["A 7-year-old girl has wheeze and a dry cough.", "Peak flow improves after salbutamol.",
      "She is diagnosed with pneumonia."], (2, "She is diagnosed with asthma."),
     "Reversible wheeze that improves with salbutamol is asthma, not pneumonia, so sentence 2 is wrong."),
    (["A 30-year-old woman has fever and dysuria.", "Urine culture grows E. coli.",
      "She is treated with nitrofurantoin."], None,
     "Dysuria with E. coli in the urine is a urinary infection; nitrofurantoin treats it. The note is right."),
    (["A 65-year-old man has atrial fibrillation.", "His CHA2DS2-VASc score is 3.",
      "No anticoagulation is needed."], (2, "He is started on apixaban."),
     "A score of 3 in atrial fibrillation calls for anticoagulation, so withholding it in sentence 2 is an error."),
]


def example(i: int) -> ChatExample:
    sentences, error, reasoning = CASES[i]
    answer = render_verdict(error is not None, *(error or (-1, None)))
    return ChatExample(critic_user(sentences), answer, reasoning, CRITIC_SYSTEM, group=f"note{i}")


def write_sft(path: Path, fmt: str, indices: list[int]) -> Path:
    """An SFT file exactly as `synthtrace export sft --format FMT` writes it."""
    path.write_text("".join(json.dumps(render(example(i), fmt)) + "\n" for i in indices))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("sft")
    corpus = [t for i in range(len(CASES)) for t in (example(i).system, example(i).user, example(i).reasoning,
                                                     example(i).answer)]
    build_tiny_model(d / "base", corpus)
    write_sft(d / "train.jsonl", "qwen3", [0, 1, 2, 3])
    write_sft(d / "val.jsonl", "qwen3", [1, 3])
    return d


class CaptureBatch(TrainerCallback):
    """Collates the whole training set with the trainer's own collator, as training starts."""

    batch: dict | None = None

    def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
        ds = train_dataloader.dataset
        CaptureBatch.batch = train_dataloader.collate_fn([ds[i] for i in range(len(ds))])


def fast(data_dir: Path, output: Path, **kw) -> TrainOptions:
    """Options for a CPU run of seconds: high learning rate, no accumulation, a log line per step."""
    defaults = {"data": data_dir / "train.jsonl", "base": str(data_dir / "base"), "output": output, "lr": 1e-2,
                "batch_size": 2, "grad_accum": 1, "logging_steps": 1, "save_steps": 10, "gradient_checkpointing": False}
    return TrainOptions(**{**defaults, **kw})


@pytest.fixture(scope="module")
def trained(data_dir: Path):
    result = train(fast(data_dir, data_dir / "out", max_steps=30, eval_data=data_dir / "val.jsonl"),
                   callbacks=[CaptureBatch()])
    return result, CaptureBatch.batch


def test_training_lowers_the_loss_and_reports_evaluation_loss(trained):
    result, _ = trained
    steps = [s for s, _ in result.losses]
    assert steps == list(range(1, 31)) and result.steps == 30
    first, last = result.losses[0][1], result.losses[-1][1]
    assert last < 0.6 * first, result.losses
    assert result.eval_loss is not None and result.eval_loss < first
    assert result.device == "cpu" and result.dtype == "float32"


def test_only_the_assistant_turn_carries_labels_think_block_included(trained, data_dir):
    _, batch = trained
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    assert batch is not None and batch["labels"].shape == batch["input_ids"].shape
    start = tok.convert_tokens_to_ids("<|im_start|>")
    for i, (ids, labels) in enumerate(zip(batch["input_ids"].tolist(), batch["labels"].tolist())):
        ex = example(i)
        trained_at = [j for j, lab in enumerate(labels) if lab != IGNORE]
        # one contiguous stretch, after the last <|im_start|> (the assistant's), labels equal to the inputs
        assert trained_at == list(range(trained_at[0], trained_at[-1] + 1))
        assert trained_at[0] > max(j for j, t in enumerate(ids) if t == start)
        assert all(labels[j] == ids[j] for j in trained_at)
        text = tok.decode([labels[j] for j in trained_at])
        assert text == f"<think>\n{ex.reasoning}\n</think>\n\n{ex.answer}<|im_end|>"
        prompt = tok.decode([t for t, lab in zip(ids, labels) if lab == IGNORE and t != tok.pad_token_id])
        assert ex.user in prompt and ex.system in prompt and ex.reasoning not in prompt


def test_the_three_export_formats_train_the_same_tokens(data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    encoded = {fmt: encode(load_examples(write_sft(tmp_path / f"{fmt}.jsonl", fmt, [0, 1]), tok), tok, 4096).rows
               for fmt in ("qwen3", "messages", "chatml")}
    assert encoded["qwen3"] == encoded["messages"] == encoded["chatml"]
    assert all(any(lab != IGNORE for lab in row["labels"]) for row in encoded["qwen3"])


def test_run_config_is_saved_beside_the_adapter(trained, data_dir):
    result, _ = trained
    out = result.output
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file() and (out / "checkpoint-30").is_dir()
    cfg = json.loads((out / CONFIG_FILE).read_text())
    assert cfg["status"] == "done" and cfg["base"] == str((data_dir / "base").resolve())
    assert cfg["options"]["lora_r"] == 16 and cfg["options"]["max_steps"] == 30 and cfg["options"]["lr"] == 1e-2
    for lib in ("torch", "transformers", "trl", "peft"):
        assert cfg["versions"][lib]
    assert cfg["data"]["train"]["sha256"] == hashlib.sha256((data_dir / "train.jsonl").read_bytes()).hexdigest()
    assert cfg["data"]["eval"]["examples"] == 2
    assert cfg["results"]["eval_loss"] == pytest.approx(result.eval_loss)


def test_the_adapter_reloads_and_changes_the_model(trained, data_dir):
    from peft import PeftModel

    result, _ = trained
    tok = AutoTokenizer.from_pretrained(result.output)
    prompt = tok.apply_chat_template([{"role": "system", "content": example(1).system},
                                      {"role": "user", "content": example(1).user}],
                                     tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(data_dir / "base")
    with torch.no_grad():
        before = base(ids).logits[0, -1]
        tuned = PeftModel.from_pretrained(base, str(result.output))
        after = tuned(ids).logits[0, -1]
    assert (after - before).abs().max() > 1e-2
    # the tuned model has learnt that an answer opens with a think block; the random base has not
    assert tok.decode(after.argmax().item()) == "<think>"
    assert tok.decode(before.argmax().item()) != "<think>"


def test_an_interrupted_run_resumes_from_its_last_checkpoint(data_dir, tmp_path):
    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 6:
                raise RuntimeError("power cut")

    opts = fast(data_dir, tmp_path / "out", max_steps=8, save_steps=4)
    with pytest.raises(RuntimeError, match="power cut"):
        train(opts, callbacks=[Crash()])
    assert (tmp_path / "out" / "checkpoint-4" / "trainer_state.json").is_file()
    assert not (tmp_path / "out" / "adapter_model.safetensors").exists()

    again = train(opts)
    assert again.resumed_from == str(tmp_path / "out" / "checkpoint-4")
    assert again.steps == 8 and [s for s, _ in again.losses] == list(range(1, 9))
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()

    other = write_sft(tmp_path / "other.jsonl", "qwen3", [0])
    with pytest.raises(TrainError, match="another run"):
        train(fast(data_dir, tmp_path / "out", data=other, max_steps=8))


def test_bad_lines_are_named_by_file_and_line(data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    good = json.dumps(render(example(0), "qwen3"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join([good, "{not json", json.dumps({"messages": [{"role": "user", "content": "hi"}]}),
                              json.dumps({"prompt": "x"}), good]) + "\n")
    with pytest.raises(TrainDataError) as e:
        load_examples(bad, tok)
    msg = str(e.value)
    assert "3 unusable line(s)" in msg
    assert f"{bad}:2: invalid JSON" in msg and f"{bad}:3:" in msg and f"{bad}:4:" in msg
    assert f"{bad}:1" not in msg and f"{bad}:5" not in msg


def test_a_template_that_drops_the_reasoning_is_refused(data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.split('</think>')[-1] | trim }}"
                         "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(TrainDataError, match=r"qwen3.jsonl:1: the base model's chat template does not render the "
                                             r"final assistant turn as exported"):
        load_examples(write_sft(tmp_path / "qwen3.jsonl", "qwen3", [0]), tok)


@pytest.mark.parametrize("template", ["qwen3", "qwen3_8"])
def test_stock_qwen3_templates_train_the_think_block_as_exported(data_dir, tmp_path, template):
    """Qwen's own templates (as TRL ships them): the history loses its reasoning, the final turn keeps it."""
    import trl

    path = Path(trl.__file__).parent / "chat_templates" / f"{template}.jinja"
    if not path.is_file():
        pytest.skip(f"this TRL does not ship {path.name}")
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    tok.chat_template = path.read_text()
    ex = example(1)
    turn = render(ex, "qwen3")["messages"]
    history = [turn[0], {"role": "user", "content": "An earlier question."},
               {"role": "assistant", "content": "<think>\nearlier thoughts\n</think>\n\nAn earlier answer."}, *turn[1:]]
    lines = [render(ex, "qwen3"), render(ex, "messages"), {"messages": history}]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    for row in encode(load_examples(data, tok), tok, None).rows:
        trained = tok.decode([lab for lab in row["labels"] if lab != IGNORE])
        # the generation prompt of a thinking template already opens the block: it is context, not target
        assert f"<think>\n{ex.reasoning}\n</think>\n\n{ex.answer}<|im_end|>".endswith(trained)
        assert trained.startswith(("<think>\n", ex.reasoning))
        assert ex.answer in tok.decode(row["input_ids"]) and "earlier thoughts" not in trained


def test_truncation_is_counted_and_examples_without_answer_tokens_are_left_out(data_dir, tmp_path):
    tok = AutoTokenizer.from_pretrained(data_dir / "base")
    examples = load_examples(write_sft(tmp_path / "t.jsonl", "qwen3", [0, 1]), tok)
    full = encode(examples, tok, None).rows
    prompt_len = full[0]["labels"].index(next(lab for lab in full[0]["labels"] if lab != IGNORE))
    cut = encode(examples, tok, prompt_len + 3)
    assert cut.truncated == 2 and all(len(r["input_ids"]) <= prompt_len + 3 for r in cut.rows)
    short = encode(examples, tok, 8)
    assert short.dropped == 2 and short.rows == []
    batch = collate(full, pad_id=tok.pad_token_id)
    assert batch["attention_mask"].sum().item() == sum(len(r["input_ids"]) for r in full)


def test_cli_trains_merges_and_explains_bad_input(data_dir, tmp_path):
    from click.testing import CliRunner

    out = tmp_path / "cli-out"
    args = ["train", "--data", str(data_dir / "train.jsonl"), "--base", str(data_dir / "base"), "--output", str(out),
            "--max-steps", "3", "--lr", "1e-2", "--grad-accum", "1",
            "--no-gradient-checkpointing", "--merge"]
    res = CliRunner().invoke(cli_main, args)
    assert res.exit_code == 0, res.output
    assert "training loss" in res.output and str(out) in res.output  # the first step is logged, whatever the interval
    assert (out / "adapter_model.safetensors").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.config.model_type == "qwen3" and (out / "merged" / "tokenizer.json").is_file()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no turns here"}\n')
    res = CliRunner().invoke(cli_main, [*args[:2], str(bad), *args[3:]])
    assert res.exit_code == 1 and f"{bad}:1:" in res.output
    if not torch.cuda.is_available():
        res = CliRunner().invoke(cli_main, [*args, "--bf16"])
        assert res.exit_code == 1 and "--bf16 needs a CUDA GPU" in res.output


def test_hf_backend_answers_through_the_gateway(trained, data_dir, tmp_path):
    result, _ = trained
    spec = f"hf:{data_dir / 'base'}+{result.output}"
    r = resolve_model(Config(), spec)
    assert r.endpoint.kind == "hf" and r.is_local and r.model == f"{data_dir / 'base'}+{result.output}"

    async def ask():
        journal = Journal(tmp_path / "journal.db")
        gw = Gateway(Config(), journal)
        messages = [{"role": "system", "content": example(2).system}, {"role": "user", "content": example(2).user}]
        try:
            first = await gw.chat(messages, model=spec, max_tokens=24, temperature=0)
            again = await gw.chat(messages, model=spec, max_tokens=24, temperature=0)
            sampled = await gw.chat(messages, model=spec, max_tokens=8, temperature=0.8, seed=1)
        finally:
            await gw.aclose()
            journal.close()
        return first, again, sampled

    first, again, sampled = arun(ask())
    assert isinstance(first.text, str) and first.reasoning is not None  # the adapter opens a think block
    assert first.prompt_tokens > 20 and 0 < first.completion_tokens <= 24
    assert first.finish_reason in ("stop", "length") and first.cost_usd == 0 and not first.cached
    assert again.cached and again.text == first.text
    assert 0 < sampled.completion_tokens <= 8


def test_retraining_into_the_same_directory_is_a_new_model_for_the_journal(trained, data_dir, tmp_path):
    result, _ = trained
    adapter = tmp_path / "adapter"
    shutil.copytree(result.output, adapter, ignore=shutil.ignore_patterns("checkpoint-*"))
    spec = f"hf:{data_dir / 'base'}+{adapter}"
    messages = [{"role": "user", "content": example(1).user}]

    async def ask():
        journal = Journal(tmp_path / "journal.db")
        gw = Gateway(Config(), journal)
        try:
            return await gw.chat(messages, model=spec, max_tokens=8, temperature=0)
        finally:
            await gw.aclose()
            journal.close()

    assert not arun(ask()).cached
    assert arun(ask()).cached  # the same weights: the answer comes from the journal
    weights = next(adapter.glob("adapter_model.*"))
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # saved again
    assert not arun(ask()).cached  # new weights are asked anew, never answered from the old ones


def test_the_example_recipes_rows_export_and_train(data_dir, tmp_path, fp, cli, write_jsonl, config_file):
    """Recipes written outside the package (examples/recipes/) export through their own to_sft and train."""
    from click.testing import CliRunner

    examples = Path(__file__).resolve().parents[1] / "examples" / "recipes"
    fp.script("plus", "Two equal numbers add to twice one of them.\nAnswer: 8", repeat_last=True)
    fp.script("Question:", {"json": {"score": 9, "reason": "right"}}, repeat_last=True)
    cfg = config_file()
    problems = write_jsonl([{"id": f"p{i}", "question": f"What is 4 plus 4? (take {i})", "answer": 8}
                            for i in range(4)], name="problems.jsonl")
    questions = write_jsonl([{"id": f"q{i}", "question": f"Why is the number {i} even or odd?"} for i in range(4)],
                            name="questions.jsonl")
    exported = []
    for recipe, inp in (("word_problems.py", problems), ("judged_answers.py", questions)):
        run = tmp_path / recipe
        assert cli("run", examples / recipe, "-i", inp, "-o", run, "--config", cfg, "-q").exit_code == 0
        out = tmp_path / f"{recipe}.sft.jsonl"
        res = cli("export", "sft", run, "--out", out, "--val-fraction", "0")
        assert res.exit_code == 0, res.output
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(lines) == 4 and all([m["role"] for m in ln["messages"]] == ["system", "user", "assistant"]
                                       for ln in lines)
        exported.append(out)
    wp = json.loads(exported[0].read_text().splitlines()[0])
    assert wp["messages"][2]["content"] == ("<think>\nTwo equal numbers add to twice one of them.\n</think>\n\n"
                                           "Answer: 8")
    assert wp["metadata"]["recipe"] == "word-problems" and wp["metadata"]["group"].startswith("p")

    both = tmp_path / "both.jsonl"
    both.write_text("".join(p.read_text() for p in exported))
    out = tmp_path / "adapter"
    res = CliRunner().invoke(cli_main, ["train", "--data", str(both), "--base", str(data_dir / "base"), "--output",
                                        str(out), "--max-steps", "2", "--grad-accum", "1", "--no-gradient-checkpointing"])
    assert res.exit_code == 0, res.output
    assert (out / "adapter_model.safetensors").is_file()
    assert "8 training" in res.output and json.loads((out / CONFIG_FILE).read_text())["results"]["steps"] == 2
