"""`synthtrace view` and `synthtrace report` over runs made by the fake provider.

The first half asks the index and the server directly: every line of a run is reachable, filters
count right, the index follows a run that grows, the server refuses other hosts. The second half
drives the page and the report in headless Chromium through Playwright, as a user would, and checks
that row text is only ever text and that nothing is fetched from anywhere but 127.0.0.1. Screenshots
go to `tmp_path / "screenshots"` (or $SYNTHTRACE_SCREENSHOTS).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_command, make_config, read_jsonl, subprocess_env

from synthtrace.testing import FakeProvider
from synthtrace.view import query
from synthtrace.view.index import RunIndex
from synthtrace.view.report import build_report, write_report
from synthtrace.view.server import ViewServer

ROOT = Path(__file__).resolve().parents[1]
MEDEC_SAMPLE = ROOT / "examples" / "medec" / "medec-ms-val-sample.csv"
HOSTILE = ('<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'
           '<a href="javascript:window.pwned=3">x</a>')
VERDICT = {"reasoning": "The scrotal approach is wrong for a testicular mass; an inguinal one is needed. " * 4,
           "error_found": True, "error_sentence_id": 1,
           "corrected_sentence": "Radical inguinal orchiectomy is required."}


@pytest.fixture(scope="module")
def medec_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A medec run over the three-note sample: kept rows, and critics rejected with their reasons."""
    tmp = tmp_path_factory.mktemp("medec")
    with FakeProvider() as fp:
        fp.script("Does the note contain", {"json": VERDICT}, repeat_last=True)
        cfg = make_config(tmp / "cfg.yaml", fp)
        run_cli(tmp, "run", "medec", "-i", MEDEC_SAMPLE, "-o", tmp / "run", "--config", cfg, "-q", "-k", 2)
    return tmp / "run"


def run_cli(cwd: Path, *args: Any) -> None:
    """The CLI as a child process (a browser test's page holds this process's event loop)."""
    done = subprocess.run(cli_command(*args), env=subprocess_env(), cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def hostile_run(tmp_path: Path) -> Path:
    """A completions run whose prompts and answers are markup meant to run in a page."""
    run = tmp_path / "hostile"
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ({"id": "x1", "prompt": HOSTILE}, {"id": "x2", "prompt": "plain"})))
    with FakeProvider() as fp:
        cfg = make_config(tmp_path / "cfg.yaml", fp)
        run_cli(tmp_path, "run", "completions", "-i", inp, "-o", run, "--config", cfg, "-q")
    with open(run / "rejected.jsonl", "a") as f:  # and a rejection that says the same
        f.write(json.dumps({"id": "x3", "record_id": "x3", "reason": HOSTILE, "source": "in.jsonl", "line": 3}) + "\n")
    return run


def lines(path: Path) -> int:
    return sum(1 for line in path.read_text().splitlines() if line.strip())


# --- the index --------------------------------------------------------------------------------------


def test_every_line_of_a_run_is_reachable_and_counted(medec_run):
    index = RunIndex(medec_run)
    try:
        for kind, name in (("row", "rows.jsonl"), ("rejected", "rejected.jsonl")):
            first = query.page(index, {"kind": kind}, 0, 2)
            assert first["total"] == lines(medec_run / name) > 0
            seen = []
            offset = 0
            while offset < first["total"]:  # paged through, two at a time
                seen += [item["n"] for item in query.page(index, {"kind": kind}, offset, 2)["items"]]
                offset += 2
            assert len(set(seen)) == first["total"]
            docs = [index.doc(n)["data"] for n in seen]
            assert docs == read_jsonl(medec_run / name)  # in file order, and whole
    finally:
        index.close()


def test_filters_and_search_count_right(medec_run):
    rows = read_jsonl(medec_run / "rows.jsonl")
    index = RunIndex(medec_run)
    try:
        gen = query.page(index, {"kind": "row", "fields": {"role": {"in": ["generator"]}}})
        assert gen["total"] == sum(r["role"] == "generator" for r in rows)
        both = {"kind": "row", "fields": {"role": {"in": ["generator"]}, "label": {"in": ["ERROR"]}}}
        assert query.page(index, both)["total"] == sum(r["role"] == "generator" and r["label"] == "ERROR" for r in rows)
        words = query.page(index, {"kind": "row", "q": "orchiect"})  # a prefix of a word in two notes
        assert words["total"] == sum("orchiect" in json.dumps(r).lower() for r in rows)
        verified = query.page(index, {"kind": "row", "fields": {"verified": {"in": ["true"]}}})
        assert verified["total"] == sum(r.get("verified") is True for r in rows)
        facets = query.facets(index, {"kind": "row", "fields": {"role": {"in": ["generator"]}}})
        assert dict(map(tuple, facets["fields"]["role"]["values"])) == {"generator": 5, "critic": 1}  # own filter off
        assert facets["fields"]["trace_words"]["type"] == "number" and sum(facets["fields"]["trace_words"]["bins"]) == 5
        reasons = query.reasons(index, {})
        assert sum(r["count"] for r in reasons) == lines(medec_run / "rejected.jsonl")
        assert reasons[0]["reason"] == "critic not verified after # attempt(s): flagged sentence # in a correct note"
        with pytest.raises(query.BadFilter, match="no field 'nope'"):
            query.page(index, {"fields": {"nope": {"in": [1]}}})
    finally:
        index.close()


def test_the_samples_of_one_note_sit_together(medec_run):
    index = RunIndex(medec_run)
    try:
        n = next(item["n"] for item in query.page(index, {"kind": "rejected"})["items"]
                 if item["fields"]["part"] == "ms-val-219_critic_correct")
        sib = query.siblings(index, n)
        assert {s["fields"].get("note_id") or s["fields"].get("part") for s in sib} == \
            {f"ms-val-219_{k}" for k in ("critic_correct", "critic_error", "generator_correct", "generator_error")}
    finally:
        index.close()


def test_the_index_follows_a_run_that_grows_and_one_that_is_rewritten(medec_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(medec_run, run, ignore=shutil.ignore_patterns("view-index.db*"))
    rows = (run / "rows.jsonl").read_text().splitlines()
    (run / "rows.jsonl").write_text(rows[0] + "\n")
    RunIndex(run).close()
    with open(run / "rows.jsonl", "a") as f:
        f.write("\n".join(rows[1:]) + "\n" + rows[0][:40])  # the rest, and a torn line still being written
    index = RunIndex(run)
    assert query.page(index, {"kind": "row"})["total"] == len(rows)
    index.close()
    (run / "rejected.jsonl").write_text(read_lines_json(medec_run / "rejected.jsonl")[0] + "\n")  # a new run's
    index = RunIndex(run)
    assert query.page(index, {"kind": "rejected"})["total"] == 1
    assert query.page(index, {"kind": "row"})["total"] == len(rows)
    index.close()


def read_lines_json(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_the_server_answers_only_its_own_host_and_forbids_foreign_scripts(medec_run):
    server = ViewServer([medec_run], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert server.server_address[0] == "127.0.0.1"
        with urllib.request.urlopen(server.url + "api/runs") as r:
            runs = json.loads(r.read())
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert runs[0]["rows"] == lines(medec_run / "rows.jsonl") and runs[0]["recipe"] == "medec"
        assert runs[0]["view"]["declared"]["source"] == "note"
        req = urllib.request.Request(server.url + "api/runs", headers={"Host": "attacker.example:80"})
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == 421
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + "static/../../../../etc/passwd")
        assert e.value.code == 404
    finally:
        server.close()


def test_the_report_carries_its_figures_and_no_markup_from_the_rows(medec_run, hostile_run, tmp_path):
    data = build_report(medec_run)
    assert data["funnel"]["rows kept"] == lines(medec_run / "rows.jsonl")
    assert data["funnel"]["rejected entries"] == lines(medec_run / "rejected.jsonl")
    assert {k for k, _, _ in data["verified"]["by"]} == {"management", "diagnosis", "none"}
    assert data["calls"] > 0 and data["spend"]["tokens_total"] > 0
    out = write_report(hostile_run, tmp_path / "r.html")
    html = out.read_text()
    body = html.split('<script type="application/json" id="data">', 1)[1].split("</script>", 1)[0]
    assert "<script>window.pwned" not in html and "<img src=x" not in html
    assert "\\u003cscript>window.pwned" in body  # the text is there, escaped inside the JSON


def test_the_cli_names_a_directory_that_is_no_run(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    result = cli("report", tmp_path / "empty", "--out", tmp_path / "r.html")
    assert result.exit_code == 1 and "no rows.jsonl or rejected.jsonl" in result.output


# --- in a browser -----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
HAS_PLAYWRIGHT = importlib.util.find_spec("pytest_playwright") is not None
browser_only = pytest.mark.skipif(CHROMIUM is None or not HAS_PLAYWRIGHT,
                                  reason="needs chromium (apt-get install chromium) and the browser extra "
                                         "(pip install -e '.[browser]'); scripts/install.sh --test installs both")


@pytest.fixture(scope="session")
def browser_type_launch_args(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("chromium-home")
    return {"executable_path": CHROMIUM, "args": [
        "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"],
        "env": {**os.environ, "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache")}}


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    d = Path(os.environ.get("SYNTHTRACE_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


class Watch:
    """What a page asked for and said: every request URL, console errors, uncaught exceptions."""

    def __init__(self, page: Any):
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)

    def only_local(self) -> bool:
        return all(u.startswith(("http://127.0.0.1:", "file://", "data:")) for u in self.requests)


@pytest.fixture
def serve():
    servers: list[ViewServer] = []

    def start(*runs: Path) -> ViewServer:
        server = ViewServer(list(runs), port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server
    yield start
    for s in servers:
        s.close()


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect  # the browser extra is optional

    return playwright_expect(locator)


@browser_only
def test_the_viewer_shows_a_medec_run(page, medec_run, serve, shots):
    watch = Watch(page)
    page.set_viewport_size({"width": 1500, "height": 950})
    page.goto(serve(medec_run).url)
    page.wait_for_selector("[data-testid=row]")
    assert page.inner_text("[data-testid=count-row]") == str(lines(medec_run / "rows.jsonl"))
    assert page.inner_text("[data-testid=count-rejected]") == str(lines(medec_run / "rejected.jsonl"))
    assert page.inner_text("[data-testid=total]") == str(lines(medec_run / "rows.jsonl"))

    page.check("[data-testid='facet-role=generator']")
    expect(page.get_by_test_id("total")).to_have_text("5")
    assert page.locator("[data-testid=row]").count() == 5
    page.uncheck("[data-testid='facet-role=generator']")
    page.check("[data-testid='facet-verified=true']")
    expect(page.get_by_test_id("total")).to_have_text("1")
    page.click("[data-testid=row]")
    page.wait_for_selector("[data-testid=source] mark.mark-error")
    assert page.inner_text("[data-testid=source] mark.mark-error") == "Scrotal orchiectomy is required."
    assert "Radical inguinal orchiectomy is required." in page.inner_text("[data-testid=source]")
    assert "verified" in page.inner_text("[data-testid=verdict]") and "true" in page.inner_text("[data-testid=verdict]")
    assert "reasoning" in page.inner_text("[data-testid=trace] .tag")
    page.click("[data-testid=call]")
    page.wait_for_selector(".call-body")
    assert "Does the note contain a medical error?" in page.inner_text(".call-body")
    page.screenshot(path=str(shots / "viewer-medec.png"))

    page.click("[data-testid=kind-rejected]")
    page.wait_for_selector("[data-testid=reason]")
    page.click("[data-testid=reason] >> nth=0")
    expect(page.get_by_test_id("total")).to_have_text("3")
    page.click("[data-testid=row] >> nth=0")
    page.wait_for_selector("[data-testid=reason-text]")
    assert "flagged sentence 1 in a correct note" in page.inner_text("[data-testid=reason-text]")
    page.screenshot(path=str(shots / "viewer-rejected.png"))
    assert watch.only_local(), watch.requests
    assert watch.errors == []


@browser_only
def test_markup_in_rows_is_shown_as_text(page, hostile_run, serve, shots, tmp_path):
    watch = Watch(page)
    page.goto(serve(hostile_run).url)
    page.wait_for_selector("[data-testid=row]")
    page.fill("[data-testid=search]", "pwned")
    expect(page.get_by_test_id("total")).to_have_text("1")
    page.click("[data-testid=row]")
    page.wait_for_selector("[data-testid=answer]")
    assert HOSTILE in page.inner_text("[data-testid=question]") and HOSTILE in page.inner_text("[data-testid=answer]")
    page.click("[data-testid=kind-rejected]")
    page.wait_for_selector("[data-testid=reason]")
    page.click("[data-testid=row]")
    page.wait_for_selector("[data-testid=reason-text]")
    assert page.inner_text("[data-testid=reason-text] pre") == HOSTILE
    assert page.evaluate("window.pwned") is None
    assert page.locator("#app img, #app a[href^='javascript'], #app script").count() == 0
    page.screenshot(path=str(shots / "viewer-markup.png"))

    report = write_report(hostile_run, tmp_path / "hostile.html")
    page.goto(report.as_uri())
    page.wait_for_selector("[data-testid=sample]")
    page.click("[data-testid=sample] summary >> nth=0")
    assert HOSTILE in page.inner_text("[data-testid=sample] >> nth=0") or HOSTILE in page.inner_text("body")
    assert page.evaluate("window.pwned") is None
    assert page.locator("#app img, #app a[href^='javascript'], #app script").count() == 0
    assert watch.only_local(), watch.requests


@browser_only
def test_the_report_opens_offline_and_draws_its_plots(page, medec_run, tmp_path, shots):
    watch = Watch(page)
    report = write_report(medec_run, tmp_path / "report.html")
    page.set_viewport_size({"width": 1200, "height": 1400})
    page.goto(report.as_uri())
    page.wait_for_selector("[data-testid=funnel]")
    assert page.locator("[data-testid=funnel] tr").count() == 6
    assert page.locator(".hist canvas").count() >= 1 and page.locator(".line canvas").count() == 2
    assert "management" in page.inner_text("[data-testid=verified]")
    assert page.locator("[data-testid=sample]").count() == lines(medec_run / "rows.jsonl")
    page.screenshot(path=str(shots / "report.png"))
    assert watch.requests == [report.as_uri()]  # the file itself, nothing else
    assert watch.errors == []


def test_synthtrace_view_serves_on_loopback_and_warns_for_anything_else(medec_run, tmp_path):
    for extra, warned in (((), False), (("--host", "0.0.0.0"), True)):
        proc = subprocess.Popen(cli_command("view", medec_run, "--port", 0, *extra), env=subprocess_env(),
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = proc.stdout.readline()
            url = line.split("synthtrace view: ", 1)[1].split()[0]
            assert url.startswith("http://127.0.0.1:" if not warned else "http://0.0.0.0:"), line
            port = url.rstrip("/").rsplit(":", 1)[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/runs") as r:
                assert json.loads(r.read())[0]["rows"] == lines(medec_run / "rows.jsonl")
        finally:
            proc.terminate()
            _, stderr = proc.communicate(timeout=30)
        assert ("anyone who can reach this machine can read these runs" in stderr) is warned


@browser_only
def test_the_report_shows_what_an_export_removed_and_the_evidence(page, medec_run, tmp_path):
    pytest.importorskip("numpy")
    sft = tmp_path / "sft.jsonl"
    # Rows made from the sample notes, checked against the same notes: every example repeats one.
    run_cli(tmp_path, "export", "sft", medec_run, "--out", sft, "--val-fraction", 0,
            "--decontaminate-against", MEDEC_SAMPLE)
    removed = tmp_path / "sft.removed.jsonl"
    assert lines(removed) == lines(medec_run / "rows.jsonl")
    report = write_report(medec_run, tmp_path / "report.html", removed=[removed])
    watch = Watch(page)
    page.goto(report.as_uri())
    section = page.wait_for_selector("[data-testid=removed]")
    text = section.text_content()
    assert f"Removed at export ({lines(removed)})" in text and "overlap with medec-ms-val-sample.csv" in text
    assert "word 13-gram overlap" in text and "ms-val-219" in text  # the method, and an item repeated
    first = json.loads(removed.read_text().splitlines()[0])
    assert first["evidence"]["ngram"] in text
    assert watch.errors == []


@browser_only
def test_the_viewer_shows_a_math_runs_verdicts_rungs_and_pass_rates(page, serve, shots, tmp_path):
    from test_math import PROBLEMS, script

    with FakeProvider() as fp:
        script(fp)
        inp = tmp_path / "problems.jsonl"
        inp.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
        run_cli(tmp_path, "run", "math", "-i", inp, "-o", tmp_path / "run", "--config",
                make_config(tmp_path / "cfg.yaml", fp), "-q", "--k", 2, "--budget", 6)
    watch = Watch(page)
    page.goto(serve(tmp_path / "run").url)
    page.wait_for_selector("[data-testid=row]")
    page.fill("[data-testid=search]", "Simplify")
    expect(page.get_by_test_id("total")).to_have_text("2")
    page.click("[data-testid=row] >> nth=0")
    page.wait_for_selector("[data-testid=verdict]")
    verdicts = " ".join(page.locator("[data-testid=verdict]").all_inner_texts()).lower()
    assert "verification" in verdicts and "correct" in verdicts and "number" in verdicts  # verdict and rung
    assert "pass_rate" in verdicts and "incorrect" in verdicts  # every sample's verdict, and the pass rate
    page.screenshot(path=str(shots / "viewer-math.png"))
    page.fill("[data-testid=search]", "")
    page.click("[data-testid=kind-rejected]")
    page.click("[data-testid=row] >> nth=0")
    page.wait_for_selector("[data-testid=reason-text]")
    assert "no verified answer in 6 samples" in page.inner_text("[data-testid=reason-text]")
    assert watch.only_local() and watch.errors == []

    report = tmp_path / "report.html"
    run_cli(tmp_path, "report", tmp_path / "run", "--out", report)
    page.goto(report.as_uri())
    page.wait_for_selector("[data-testid=sample]")
    page.click("[data-testid=sample] >> nth=0")
    shown = page.inner_text("body")
    assert "sampling.pass_rate" in shown  # its distribution over the problems
    tables = " ".join(page.locator("[data-testid=sample-verdict]").all_inner_texts())
    assert "rung" in tables and "pass_rate" in tables and "correct" in tables
    assert watch.errors == []
