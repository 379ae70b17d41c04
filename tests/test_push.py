"""`synthtrace push`: an `export hf` directory onto a fake Hugging Face Hub (a real HTTP server on
127.0.0.1, `synthtrace.testing.fake_hub`), through huggingface_hub as a user's push goes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("huggingface_hub")
from huggingface_hub import constants
from test_export_hf import export, run  # noqa: F401  (`run` is a fixture)

from synthtrace.export import card as C
from synthtrace.testing.fake_hub import FakeHub


@pytest.fixture(autouse=True)
def _online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """huggingface_hub may talk (to the fake Hub on 127.0.0.1 only: HF_ENDPOINT is scrubbed, and every
    push below names the fake's), and never finds a developer's stored login."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))


HUB_CARD = """---
license: mit
pretty_name: Alice's sums
tags:
- arithmetic
configs:
- config_name: default
  data_files:
  - split: old_split
    path: default/old_split-00000-of-00001.parquet
dataset_info:
- config_name: default
  splits:
  - name: old_split
    num_bytes: 10
    num_examples: 1000
---

# Alice's sums

## Notes from Alice

Edited on the Hub: keep me.
"""


def test_push_creates_the_repo_and_merges_the_card_already_on_the_hub(run, cli, tmp_path):  # noqa: F811
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    token = "hf_test_token_never_written"
    with FakeHub(token=token) as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": token}
        done = cli("push", out, "alice/sums", "--private", env=env)
        assert done.exit_code == 0, done.output
        assert hub.repos["alice/sums"].private
        first = hub.files("alice/sums")
        assert set(first) == {"README.md", "default/train-00000-of-00001.parquet",
                              "metadata/train-00000-of-00001.parquet", "rejected/train-00000-of-00001.parquet"}
        assert first["default/train-00000-of-00001.parquet"] == (out / "default/train-00000-of-00001.parquet").read_bytes()

        # Someone edits the card on the Hub; an older export left a split that is gone now.
        hub.put("alice/sums", "README.md", HUB_CARD.encode())
        hub.put("alice/sums", "default/old_split-00000-of-00001.parquet", b"PAR1")
        again = cli("push", out, "alice/sums", env=env)
        assert again.exit_code == 0, again.output
        assert "merged with the card already there" in again.output
        files = hub.files("alice/sums")
        assert "default/old_split-00000-of-00001.parquet" not in files  # no stale split on the Hub
        text = files["README.md"].decode()
        meta, body = C.split_card(text)
        assert meta["pretty_name"] == "Alice's sums" and meta["license"] == "apache-2.0"
        assert meta["tags"][0] == "arithmetic" and "synthetic" in meta["tags"]
        splits = {(i["config_name"], s["name"]) for i in meta["dataset_info"] for s in i["splits"]}
        assert ("default", "old_split") not in splits and ("default", "train") in splits
        assert body.count("Edited on the Hub: keep me.") == 1 and body.count(C.BEGIN) == 1
        assert 'load_dataset("alice/sums", "default", split="train")' in body
        assert (out / "README.md").read_text(encoding="utf-8") == text  # DIR holds what the Hub shows
        assert all(h.get("authorization") == f"Bearer {token}" for h in hub.headers_seen)
        assert hub.unknown == []
    # The token went to the Hub in a header, and nowhere else.
    assert token not in done.output + again.output
    for path in [*out.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    assert all(token.encode() not in data for data in files.values())


def test_push_without_a_token_says_how_to_give_one(run, cli, tmp_path):  # noqa: F811
    out = tmp_path / "hf"
    export(cli, run, out, "--license", "apache-2.0")
    with FakeHub() as hub:
        done = cli("push", out, "alice/sums", env={"HF_ENDPOINT": hub.url})
        assert done.exit_code != 0 and "no Hugging Face token: set HF_TOKEN" in done.output
        assert hub.requests == []
    bare = tmp_path / "bare"
    bare.mkdir()
    refused = cli("push", bare, "alice/sums")
    assert refused.exit_code != 0 and "has no README.md: make it with `synthtrace export hf" in refused.output
