"""Render scan results: text for a person, JSON for tools, SARIF 2.1.0 for editors and code hosts.

The JSON shape is a contract (docs/codemods.md): ``version`` is bumped on any
incompatible change; fields are only ever added.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Sequence

from .detect import KINDS, Site
from .runner import FileResult

JSON_VERSION = 1
_LEVEL = {"rewrite": "warning", "decide": "error", "capture": "note", "covered": "none", "ignored": "none"}


def site_dict(site: Site) -> dict:
    return dataclasses.asdict(site)


def to_json(results: Sequence[FileResult]) -> str:
    """``{"version", "files", "skipped": [...], "sites": [...], "summary": {...}}``."""
    sites = [s for r in results for s in r.sites]
    doc = {
        "version": JSON_VERSION,
        "files": len(results),
        "skipped": [{"path": r.path, "line": r.line, "reason": r.reason} for r in results if r.status == "skipped"],
        "sites": [site_dict(s) for s in sites],
        "summary": summary(results),
    }
    return json.dumps(doc, indent=2, sort_keys=False)


def summary(results: Sequence[FileResult]) -> dict:
    by_action: dict[str, int] = defaultdict(int)
    by_kind: dict[str, int] = defaultdict(int)
    for result in results:
        for site in result.sites:
            by_action[site.action] += 1
            by_kind[site.kind] += 1
    return {
        "sites": sum(by_kind.values()),
        "by_action": dict(sorted(by_action.items())),
        "by_kind": dict(sorted(by_kind.items())),
        "skipped_files": sum(1 for r in results if r.status == "skipped"),
    }


def to_text(results: Sequence[FileResult]) -> str:
    """Sites grouped by module, then aggregate; skipped files last; a one-line summary."""
    lines: list[str] = []
    for result in results:
        if not result.sites:
            continue
        lines.append(result.path)
        groups: dict[str, list[Site]] = defaultdict(list)
        for site in result.sites:
            groups[site.aggregate or "(aggregate known at run time)"].append(site)
        for aggregate, sites in groups.items():
            lines.append(f"  {aggregate}")
            for site in sites:
                where = f"{site.line}:{site.column}"
                fn = f" in {site.function}()" if site.function else ""
                status = site.action + (f": {site.reason}" if site.reason else "")
                event = f" -> {site.event_type}" if site.event_type and site.action == "rewrite" else ""
                lines.append(f"    {where:>8}  {site.kind:<15} {site.code}{fn}{event}")
                lines.append(f"              {status}; commit {'visible' if site.commit_visible else 'not visible'};"
                             f" confidence {site.confidence}")
    skipped = [r for r in results if r.status == "skipped"]
    for result in skipped:
        lines.append(f"skipped {result.path}:{result.line}: {result.reason}")
    counts = summary(results)
    actions = ", ".join(f"{n} {a}" for a, n in counts["by_action"].items()) or "none"
    lines.append(f"{count_of(counts['sites'], 'state change')} in {count_of(len(results), 'file')} ({actions}); "
                 f"{count_of(counts['skipped_files'], 'file')} skipped")
    return "\n".join(lines) + "\n"


def to_sarif(results: Sequence[FileResult], version: str = "0.1.0") -> str:
    """A SARIF 2.1.0 log: one rule per kind, one result per site, skipped files as notifications."""
    rules = [
        {
            "id": f"strangler/{kind}",
            "name": kind.replace("-", " ").title().replace(" ", ""),
            "shortDescription": {"text": f"State change: {kind}"},
            "helpUri": "https://example.invalid/strangler/docs/codemods.md",
        }
        for kind in KINDS
    ]
    rule_index = {kind: i for i, kind in enumerate(KINDS)}
    sarif_results = []
    for result in results:
        for site in result.sites:
            message = f"{site.kind} of {site.aggregate or 'an entity'}: {site.action}"
            if site.reason:
                message += f" ({site.reason})"
            if site.event_type:
                message += f"; event type {site.event_type}"
            sarif_results.append({
                "ruleId": f"strangler/{site.kind}",
                "ruleIndex": rule_index[site.kind],
                "level": _LEVEL.get(site.action, "note"),
                "message": {"text": message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": site.path, "uriBaseId": "%SRCROOT%"},
                        "region": {"startLine": max(site.line, 1), "startColumn": site.column + 1},
                    },
                    "logicalLocations": [{"fullyQualifiedName": site.function}] if site.function else [],
                }],
                "properties": {k: v for k, v in site_dict(site).items() if k not in ("path", "line", "column")},
            })
    notifications = [
        {
            "level": "error",
            "message": {"text": f"skipped: {r.reason}"},
            "locations": [{"physicalLocation": {
                "artifactLocation": {"uri": r.path, "uriBaseId": "%SRCROOT%"},
                "region": {"startLine": max(r.line, 1)},
            }}],
        }
        for r in results if r.status == "skipped"
    ]
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "strangler", "version": version, "rules": rules,
                                "informationUri": "https://example.invalid/strangler"}},
            "results": sarif_results,
            "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        }],
    }
    return json.dumps(doc, indent=2)


def count_of(n: int, noun: str) -> str:
    """``1 file``, ``2 files``."""
    return f"{n} {noun}{'s' if n != 1 else ''}"
