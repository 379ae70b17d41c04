"""`synthtrace push DIR REPO [--private]`: an `export hf` directory onto the Hugging Face Hub.

Through huggingface_hub: `create_repo(exist_ok=True)` (a dataset repo; `--private` applies when it is
created), the card already on the Hub read back and merged with DIR's (`card.merge`: what someone
added to it there — tags, a pretty name, a section of text — stays; synthtrace's own fields and
generated part are updated), then one `upload_folder` commit that also deletes the files of
synthtrace's configs that this export no longer has, so no stale split stays behind. The merged card
is written back to DIR, so DIR holds what the Hub shows.

The token is huggingface_hub's own business: `HF_TOKEN` in the environment (or its stored login),
read by huggingface_hub itself; synthtrace never takes it as a flag and never writes it anywhere.
`HF_ENDPOINT` names another Hub (read when the push starts).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthtrace.export import card as C
from synthtrace.export.hf import CONFIGS, REMOVED, HubExtraMissing
from synthtrace.export.sft import ExportError

# The HTTP libraries huggingface_hub has used: their errors are the network's, not a bug of ours.
_NETWORK = ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
# Files of DIR that are never uploaded: dot files, huggingface_hub's download metadata, editor leftovers.
IGNORED = [".*", "**/.*", "*~"]


class PushError(ExportError):
    """A push that cannot be made (no token, not an export directory, the Hub said no)."""


@dataclass(slots=True)
class PushResult:
    repo_id: str
    url: str
    commit_url: str
    merged_with_hub_card: bool
    files: int
    warnings: list[str] = field(default_factory=list)


def _hub() -> Any:
    try:
        import huggingface_hub
    except ImportError:
        raise HubExtraMissing("push talks to the Hub through huggingface_hub: pip install 'synthtrace[hub]'") from None
    return huggingface_hub


def push(directory: Path, repo_id: str, private: bool = False, api: Any = None) -> PushResult:
    """Publish `directory` (written by `export hf`) as dataset `repo_id`; `api` is an `HfApi` (default:
    one for `HF_ENDPOINT`, or the Hub)."""
    card_path = directory / C.CARD
    if not card_path.is_file():
        raise PushError(f"{directory} has no {C.CARD}: make it with `synthtrace export hf RUN --out {directory}`")
    local = card_path.read_text(encoding="utf-8")
    try:
        meta, _ = C.split_card(local)
    except C.CardError as e:
        raise PushError(f"{card_path}: {e}") from None
    if not meta.get("configs"):
        raise PushError(f"{card_path} lists no configs: is {directory} an `export hf` directory?")
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PushError(f"{repo_id!r}: a dataset repo is named OWNER/NAME (your user name or an organisation)")
    hub = _hub()
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, OfflineModeIsEnabled

    if api is None:
        api = hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    if not (api.token or hub.get_token()):
        raise PushError("no Hugging Face token: set HF_TOKEN in the environment (a write token from "
                        "https://huggingface.co/settings/tokens), or log in once with `hf auth login`")
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=True if private else None, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="synthtrace-card-") as tmp:
            try:
                hub_card: str | None = Path(api.hf_hub_download(repo_id, C.CARD, repo_type="dataset",
                                                                local_dir=tmp)).read_text(encoding="utf-8")
            except EntryNotFoundError:
                hub_card = None
        try:
            merged = C.relocate(C.merge(hub_card, local, new_text=True), repo_id)
        except C.CardError as e:
            raise PushError(f"the card on the Hub ({repo_id}/{C.CARD}): {e}; fix it there first") from None
        card_path.write_text(merged, encoding="utf-8")
        files = sum(1 for p in directory.rglob("*") if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(directory).parts))
        info = api.upload_folder(folder_path=str(directory), repo_id=repo_id, repo_type="dataset",
                                 commit_message="Dataset and card from synthtrace export hf",
                                 ignore_patterns=IGNORED,
                                 delete_patterns=[*(f"{c}/*" for c in CONFIGS), REMOVED])
    except HfHubHTTPError as e:
        raise PushError(f"the Hub refused the push to {repo_id}: {_first_line(e)}") from None
    except OfflineModeIsEnabled:
        raise PushError("HF_HUB_OFFLINE is set: huggingface_hub sends nothing while it is; unset it to push") from None
    except Exception as e:
        if type(e).__module__.split(".")[0] not in _NETWORK:
            raise
        raise PushError(f"could not reach {api.endpoint}: {_first_line(e)}") from None
    return PushResult(repo_id, str(url), str(getattr(info, "commit_url", "")), hub_card is not None, files)


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
