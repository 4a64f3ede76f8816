"""``edgellama mcp`` end to end: the official SDK's own client starts the real command over stdio,
lists the tools and calls each one, in-process and through a running daemon, with the real models."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import CORPUS, ROOT, run_cli

mcp = pytest.importorskip("mcp")
from mcp import Client, StdioServerParameters  # noqa: E402

pytestmark = pytest.mark.models
TOOLS = {"search", "ask", "show", "summarize", "status"}


def _env(root: Path, shared_data: Path, runtime: Path) -> dict:
    return {**os.environ, "XDG_DATA_HOME": str(shared_data), "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_RUNTIME_DIR": str(runtime), "EDGELLAMA_DB": str(root / "mcp.db")}


def session(env: dict, calls):
    """Run ``calls(client)`` against a fresh ``edgellama mcp`` process; what it returns."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "edgellama", "mcp"], env=env, cwd=str(ROOT))

    async def main():
        async with Client(params, read_timeout_seconds=300) as client:
            return await calls(client)

    return asyncio.run(main())


def data(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content or json.loads(result.content[0].text)


def error_text(result) -> str:
    assert result.is_error
    (content,) = result.content
    return content.text


@pytest.fixture
def indexed(tmp_path, shared_data):
    runtime = tmp_path / "run"
    runtime.mkdir()
    env = _env(tmp_path, shared_data, runtime)
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("station/power.md", "station/water-supply.md", "station/generator-log.pdf"):
        (docs / Path(name).name).write_bytes((CORPUS / name).read_bytes())
    done = run_cli("index", str(docs), env=env)
    assert done.returncode == 0, done.stderr
    return env, docs


async def _every_tool(client, docs: Path) -> dict:
    out = {"tools": {t.name for t in (await client.list_tools()).tools}}
    found = data(await client.call_tool("search", {"query": "battery bank capacity", "k": 3}))
    out["search"] = found["passages"]
    out["ask"] = data(await client.call_tool("ask", {"question": "How much energy can the battery bank store?"}))
    out["unanswerable"] = data(await client.call_tool("ask", {"question": "Who won the 1998 football world cup?"}))
    out["show"] = data(await client.call_tool("show", {"path": found["passages"][0]["citation"], "context": 1}))
    out["show_pdf"] = data(await client.call_tool("show", {"path": f"{docs}/generator-log.pdf:page 2:1-2"}))
    out["bad_path"] = error_text(await client.call_tool("show", {"path": f"{docs}/nothere.md:1-3"}))
    out["bad_lines"] = error_text(await client.call_tool("show", {"path": f"{docs}/power.md:500-510"}))
    out["summary"] = data(await client.call_tool("summarize", {"path": str(docs / "power.md"), "length": "short"}))
    out["bad_summary"] = error_text(await client.call_tool("summarize", {"path": str(docs / "nothere.md")}))
    out["status"] = data(await client.call_tool("status", {}))
    return out


def _check(out: dict, docs: Path) -> None:
    assert out["tools"] == TOOLS
    top = out["search"][0]
    assert top["file"] == str(docs / "power.md") and top["citation"].startswith(f"{docs}/power.md:")
    assert {"lines", "heading", "snippet", "page"} <= set(top)
    assert out["ask"]["kind"] == "answer" and "210" in out["ask"]["answer"]
    assert out["ask"]["sources"][0]["path"] == str(docs / "power.md")
    assert out["unanswerable"]["kind"] == "abstain" and out["unanswerable"]["sources"] == []
    shown = out["show"]
    assert shown["path"] == top["file"] and any("210 kWh" in line["text"] for line in shown["lines"] if line["cited"])
    assert not shown["lines"][0]["cited"] or shown["line_start"] == 1  # -C 1 adds a line before
    assert out["show_pdf"]["page"] == 2 and out["show_pdf"]["lines"][0]["text"] == "Service intervals and procedures"
    for message in (out["bad_path"], out["bad_lines"], out["bad_summary"]):
        assert "\n" not in message and "Traceback" not in message
    # The SDK names the tool before the message; the message is the CLI's one line.
    assert out["bad_path"] == (f"Error executing tool show: {docs}/nothere.md is not in the index "
                               "(see 'edgellama status'; paths as search prints them)")
    assert out["bad_lines"].startswith("Error executing tool show: lines 500-510 are out of range")
    assert "not indexed" in out["bad_summary"] or "outside" in out["bad_summary"]
    points = out["summary"]["overview"]
    assert points and all(c["path"] == str(docs / "power.md") for p in points for c in p["citations"])
    assert out["status"]["documents"] == 3


def test_mcp_in_process(indexed):
    env, docs = indexed
    out = session(env, lambda client: _every_tool(client, docs))
    _check(out, docs)
    assert out["status"]["mcp"]["backend"] == "in-process" and out["status"]["mcp"]["models_loaded_here"]


def test_mcp_through_the_daemon_loads_no_model(indexed, tmp_path):
    """With a daemon serving the same database, the MCP process loads no model and never imports
    torch, sentence-transformers or llama.cpp."""
    from daemon_process import DaemonProcess

    env, docs = indexed
    daemon = DaemonProcess(env=env, log=tmp_path / "daemon.log", folders=(docs,))
    try:
        daemon.wait_ready()
        out = session(env, lambda client: _every_tool(client, docs))
    finally:
        daemon.stop()
    _check(out, docs)
    assert out["status"]["mcp"] == {"backend": "daemon", "models_loaded_here": False, "heavy_modules": []}
    assert out["status"]["daemon"]["pid"] == daemon.process.pid
