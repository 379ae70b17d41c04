"""Clean data: decontamination against evaluation sets and near-duplicate removal, each removal with its evidence.

A planted set measures the defaults: training texts holding evaluation items verbatim, with a few
words changed, or with their sentences reordered, and clean texts of the same kind that share only
boilerplate sentences with them (as clinical notes share their vital-signs lines). The corpus is
generated here (seeded), so the figures hold on every machine; with ../shared the same is measured
on MEDEC's own notes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import make_config, read_jsonl

from synthtrace.quality.contamination import ContaminationIndex, eval_items
from synthtrace.testing.planted import Corpus

MEDEC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "medec"
TEST_CSV = MEDEC_DIR / "MEDEC-MS-TestSet-with-GroundTruth-and-ErrorType.csv"
VAL_CSV = MEDEC_DIR / "MEDEC-MS-ValidationSet-with-GroundTruth-and-ErrorType.csv"

def rates(index: ContaminationIndex, texts: list[str]) -> float:
    return sum(index.find(t) is not None for t in texts) / len(texts)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    corpus = Corpus()
    evals = [corpus.document() for _ in range(200)]
    path = tmp_path_factory.mktemp("eval") / "heldout.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    kinds = {"verbatim": [corpus.wrapped(t) for t in evals],
             "few words changed": [corpus.wrapped(corpus.changed(t)) for t in evals],
             "sentences reordered": [corpus.wrapped(corpus.reordered(t)) for t in evals],
             "clean": [corpus.wrapped(corpus.document()) for _ in range(400)]}
    return {"path": path, "evals": evals, "kinds": kinds}


def test_planted_copies_are_found_and_clean_texts_are_not_at_the_defaults(planted):
    index = ContaminationIndex.build([planted["path"]], cache=False)
    kinds = planted["kinds"]
    assert rates(index, kinds["verbatim"]) == 1.0
    assert rates(index, kinds["few words changed"]) >= 0.98
    assert rates(index, kinds["sentences reordered"]) >= 0.98
    assert rates(index, kinds["clean"]) <= 0.01  # boilerplate alone does not make a text contaminated
    strict = ContaminationIndex.build([planted["path"]], min_overlap=0.0, cache=False)
    assert rates(strict, kinds["clean"]) >= 0.2  # … it would, were any shared 13-gram enough


def test_every_hit_names_its_evidence_and_the_index_is_cached(planted, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    index = ContaminationIndex.build([planted["path"]])
    cached = list((tmp_path / "cache" / "synthtrace" / "decontamination").glob("*.npz"))
    assert len(cached) == 1
    again = ContaminationIndex.build([planted["path"]])  # from the cache
    for i, text in enumerate(planted["kinds"]["sentences reordered"][:20]):
        hit, hit_again = index.find(text), again.find(text)
        assert hit is not None and hit.as_dict() == hit_again.as_dict()
        assert hit.item == f"q{i}" and hit.eval_set == "heldout.jsonl" and hit.field == "question"
        assert hit.n == 13 and hit.shared >= 1 and hit.overlap >= 0.1
        assert hit.ngram in " ".join(planted["evals"][i].lower().replace(".", "").split())


def test_short_items_match_by_8_grams_and_fields_are_detected_or_named(tmp_path):
    path = tmp_path / "qa.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["uid", "problem", "solution", "level"])
        w.writerow(["p1", "How many integers n with 1 <= n <= 100 make n squared plus one prime?", "19", "5"])
        w.writerow(["p2", "Find the least positive integer whose digits multiply to 2016 exactly.", "", "4"])
    assert [(i, f) for i, f, _ in eval_items(path)] == [("p1", "problem"), ("p2", "problem")]
    index = ContaminationIndex.build([path], cache=False)
    hit = index.find("Solve: how many integers n with 1 <= n <= 100 make n squared plus one prime? Think step by step.")
    assert hit is not None and hit.n == 8 and hit.item == "p1" and hit.overlap == 1.0
    assert index.find("How many integers are prime between one and a hundred?") is None
    named = ContaminationIndex.build([path], fields=["solution"], cache=False)
    assert len(named) == 0  # "19" has too few words for an n-gram
    with pytest.raises(FileNotFoundError, match="evaluation set not found"):
        ContaminationIndex.build([tmp_path / "nope.jsonl"])


@pytest.mark.skipif(not TEST_CSV.exists(), reason=f"{TEST_CSV} is not here")
def test_on_medec_notes_planted_test_copies_are_found_and_validation_notes_are_clean():
    index = ContaminationIndex.build([TEST_CSV], cache=False)
    corpus = Corpus(seed=3)
    notes = [t for _, field, t in eval_items(TEST_CSV) if field == "Text"][:300]
    assert rates(index, [corpus.wrapped(t) for t in notes]) == 1.0
    assert rates(index, [corpus.wrapped(corpus.changed(t)) for t in notes]) >= 0.98
    assert rates(index, [corpus.wrapped(corpus.reordered(t)) for t in notes]) >= 0.98
    validation = [t for _, field, t in eval_items(VAL_CSV) if field == "Text"]
    assert rates(index, validation) <= 0.01  # other notes of the same kind: vital signs alone do not count


# --- near-duplicates ----------------------------------------------------------------------------------


def test_near_duplicates_are_found_with_their_neighbour_and_the_first_is_kept():
    pytest.importorskip("datasketch")
    from synthtrace.quality.neardup import NearDuplicates

    corpus = Corpus(seed=11)
    docs = [corpus.document() for _ in range(150)]
    seen = NearDuplicates(threshold=0.8)
    try:
        assert all(seen.check(f"d{i}", d) is None for i, d in enumerate(docs))  # distinct texts: all kept
        copies = [seen.check(f"c{i}", corpus.changed(d, 1)) for i, d in enumerate(docs[:50])]
        found = [c for c in copies if c is not None]
        assert len(found) >= 45 and all(c[1] >= 0.8 for c in found)
        assert all(c[0] == f"d{i}" for i, c in enumerate(copies) if c is not None)  # the earlier one is named
        others = [seen.check(f"o{i}", corpus.document()) for i in range(100)]
        assert sum(o is not None for o in others) <= 1
    finally:
        seen.close()


# --- export sft -------------------------------------------------------------------------------------


def test_export_removes_contaminated_and_near_duplicate_examples_with_their_evidence(fp, cli, tmp_path, write_jsonl):
    corpus = Corpus(seed=5)
    evals = [corpus.document() for _ in range(10)]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"id": f"q{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    clean = [corpus.document() for _ in range(20)]
    prompts = ([{"id": f"leak{i}", "prompt": corpus.wrapped(corpus.reordered(evals[i]))} for i in range(3)]
               + [{"id": f"ok{i}", "prompt": t} for i, t in enumerate(clean)]
               + [{"id": "again", "prompt": clean[4] + " Thanks."}])  # a near-duplicate of ok4's question
    inp = write_jsonl(prompts)
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", make_config(tmp_path / "c.yaml", fp),
               "-q", "-c", 1)  # one at a time: rows.jsonl in input order, so "again" comes after ok4
    assert done.exit_code == 0, done.output
    out = tmp_path / "sft.jsonl"
    exported = cli("export", "sft", tmp_path / "run", "--out", out, "--val-fraction", 0,
                   "--decontaminate-against", heldout, "--dedup", "question")
    assert exported.exit_code == 0, exported.output
    assert len(read_jsonl(out)) == 20
    removed = read_jsonl(tmp_path / "sft.removed.jsonl")
    by_row = {r["row_id"]: r for r in removed}
    assert set(by_row) == {"leak0", "leak1", "leak2", "again"}
    for i in range(3):
        r = by_row[f"leak{i}"]
        assert r["reason"] == "overlap with heldout.jsonl" and r["part"] == "question"
        assert r["method"] == "word 13-gram overlap" and r["threshold"] == 0.1
        ev = r["evidence"]
        assert ev["item"] == f"q{i}" and ev["eval_set"] == "heldout.jsonl" and ev["overlap"] >= 0.1
        assert ev["ngram"] and r["example"]["messages"][-2]["content"].lower().count(ev["ngram"].split()[0]) >= 1
    dup = by_row["again"]
    assert dup["reason"] == "near-duplicate question" and dup["evidence"]["similarity"] >= 0.8
    assert dup["evidence"]["neighbour"].startswith("rows.jsonl:") and dup["threshold"] == 0.8
    assert "2 overlap with heldout.jsonl" not in exported.output and "3 overlap with heldout.jsonl" in exported.output
    assert "1 near-duplicate question" in exported.output


def test_a_run_rejects_rows_that_overlap_an_evaluation_set_with_the_evidence(fp, cli, tmp_path, write_jsonl):
    corpus = Corpus(seed=9)
    evals = [corpus.document() for _ in range(5)]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"id": f"q{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    inp = write_jsonl([{"id": "leak", "prompt": corpus.wrapped(evals[2])}]
                      + [{"id": f"ok{i}", "prompt": corpus.document()} for i in range(6)])
    cfg = make_config(tmp_path / "c.yaml", fp)
    done = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q",
               "--decontaminate-against", heldout)
    assert done.exit_code == 0, done.output
    assert sorted(r["id"] for r in read_jsonl(tmp_path / "run" / "rows.jsonl")) == [f"ok{i}" for i in range(6)]
    [entry] = read_jsonl(tmp_path / "run" / "rejected.jsonl")
    assert entry["id"] == "leak" and entry["reason"] == "overlap with heldout.jsonl"
    assert entry["field"] in ("prompt", "messages[0].content") and entry["method"] == "word 13-gram overlap"
    assert entry["evidence"]["item"] == "q2" and entry["evidence"]["overlap"] >= 0.1 and entry["evidence"]["ngram"]
    asked = len(fp.requests)
    again = cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q",
                "--decontaminate-against", heldout)
    assert again.exit_code == 0 and len(fp.requests) == asked  # its call replays from the journal; still rejected
    assert [e["id"] for e in read_jsonl(tmp_path / "run" / "rejected.jsonl")] == ["leak"]


def test_embedding_similarity_removes_what_means_the_same_with_its_evidence(fp, cli, tmp_path, write_jsonl):
    pytest.importorskip("transformers")
    from synthtrace.train.tiny import build_tiny_model

    corpus = Corpus(seed=13)
    evals = [corpus.sentence() for _ in range(4)]  # under 50 words: no 50-gram can match them
    model = build_tiny_model(tmp_path / "encoder", evals)  # random weights: the same text, the same vector
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps({"id": f"q{i}", "question": t}) + "\n" for i, t in enumerate(evals)))
    inp = write_jsonl([{"id": "same", "prompt": evals[1]}] + [{"id": f"ok{i}", "prompt": corpus.document()}
                                                                for i in range(4)])
    cfg = make_config(tmp_path / "c.yaml", fp)
    assert cli("run", "completions", "-i", inp, "-o", tmp_path / "run", "--config", cfg, "-q").exit_code == 0
    out = tmp_path / "sft.jsonl"
    # 50-grams of texts under 50 words: the n-gram check cannot see the copy, only the embedding can.
    done = cli("export", "sft", tmp_path / "run", "--out", out, "--val-fraction", 0, "--decontaminate-against",
               heldout, "--ngram", 50, "--ngram-short", 50, "--embedding-model", model, "--embedding-threshold", 0.9999)
    assert done.exit_code == 0, done.output
    [removed] = read_jsonl(tmp_path / "sft.removed.jsonl")
    assert removed["row_id"] == "same" and removed["reason"] == "similar to heldout.jsonl"
    assert removed["method"] == "embedding cosine (encoder, mean-pooled)" and removed["threshold"] == 0.9999
    assert removed["evidence"]["item"] == "q1" and removed["evidence"]["similarity"] >= 0.9999
    assert len(read_jsonl(out)) == 4
    lonely = cli("export", "sft", tmp_path / "run", "--out", tmp_path / "x.jsonl", "--embedding-model", model)
    assert lonely.exit_code == 1 and "--embedding-model compares with the --decontaminate-against sets" in lonely.output
