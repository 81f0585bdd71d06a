#!/usr/bin/env python3
"""Checks the sensor's Grafana dashboards and Prometheus alert rules.

Standard library only (Python 3.11+). Run from anywhere; paths default to the
repository that contains this script.

    grafana/check.py                      # (a) dashboards, (b) metric names, rules metadata
    grafana/check.py --list-queries       # (d) print every panel and variable query
    grafana/check.py --prometheus http://127.0.0.1:9090 [--retry-for 120]
                                          # (c) run every query against a live Prometheus
    grafana/check.py --prometheus URL --expect-firing SensorSynFlood --expect-silent SensorPortScan

What is checked:
  (a) every dashboard in grafana/dashboards/*.json: a uid and a title; template variables
      datasource (type datasource), job, instance and iface; every panel and target uses the
      datasource variable ${datasource}; every target has a non-empty expression; every
      vector selector filters by job=~"$job" and instance=~"$instance"; no job name is
      hard-coded; ${DS_PROMETHEUS} only appears in __inputs (provisioning does not substitute it).
  (b) every metric a dashboard or a rule uses is documented in METRICS.md (or
      docs/detection.md); where METRICS.md gives a family's labels (`- labels:` under a
      `### name` heading), every label matcher and grouping label is one of them, and every
      dashboard selector of a family with an iface label filters by iface=~"$iface";
      every alert has a severity label, summary, description and a runbook_url whose
      docs/runbooks/<Alert>.md exists.
  (c) with --prometheus: every panel query, with $job/$instance -> ".*", $iface -> ".+",
      $__rate_interval -> 1m, $__range -> 5m and $__interval -> 15s, is sent to
      /api/v1/query and must succeed and return data; every variable's label_values()
      must return values; every alert of the rules file must be loaded without error;
      --expect-firing / --expect-silent assert alert states through /api/v1/alerts.

Exit status: 0 when everything passes, 1 when a check fails, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_VARIABLES = ("datasource", "job", "instance", "iface")
DATASOURCE_REF = "${datasource}"
# Series Prometheus itself attaches to every target: not the sensor's to document.
PROMETHEUS_BUILTINS = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS", "ALERTS_FOR_STATE",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN", "start", "end",
}
SUBSTITUTIONS = {
    "job": ".*", "instance": ".*", "iface": ".+",
    "__rate_interval": "1m", "__range": "5m", "__interval": "15s", "__range_s": "300",
    "__interval_ms": "15000",
}


@dataclass
class Query:
    """One PromQL expression found in a dashboard."""

    source: str  # dashboard file name
    where: str  # panel title or "variable <name>"
    ref: str  # refId, or "var"
    expr: str
    variable_label: str | None = None  # set for label_values(metric, label) variables


@dataclass
class Rule:
    """One alerting rule, as far as this checker needs it."""

    name: str
    expr: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    """Collected failures and warnings."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def error(self, msg: str) -> None:
        self.errors.append(msg)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)


# ---------------------------------------------------------------------------------------
# PromQL helpers


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replaces Grafana variables ($x, ${x}, ${x:fmt}, [[x]]) by the given values."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2) or m.group(3)
        return values.get(name, m.group(0))

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", repl, expr)


_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'  # strings
    r"|(?P<num>0x[0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?)"
    r"|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)"
)


def _strip(expr: str) -> str:
    """Removes strings, label matchers, ranges and grouping label lists."""
    expr = substitute(expr, {k: "X" for k in ("job", "instance", "iface")} | SUBSTITUTIONS)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    expr = re.sub(r"\{[^{}]*\}", " ", expr)
    expr = re.sub(r"\[[^\[\]]*\]", " ", expr)
    return re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (functions and keywords excluded)."""
    text = _strip(expr)
    names = set()
    for m in _TOKEN.finditer(text):
        name = m.group("id")
        if not name or name in PROMQL_KEYWORDS:
            continue
        if re.match(r"\s*\(", text[m.end():]):
            continue  # a function or aggregation
        names.add(name)
    return names


def selectors(expr: str) -> list[tuple[str, str]]:
    """Vector selectors as (metric name, matcher text); bare names get an empty matcher."""
    masked = re.sub(r'"(?:[^"\\]|\\.)*"', lambda m: "#" * len(m.group(0)), expr)
    masked = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)",
        lambda m: " " * len(m.group(0)), masked,
    )
    masked = re.sub(r"\[[^\[\]]*\]", lambda m: " " * len(m.group(0)), masked)
    out = []
    skip_until = 0
    for m in _TOKEN.finditer(masked):
        name = m.group("id")
        if m.start() < skip_until or not name or name in PROMQL_KEYWORDS:
            continue
        rest = masked[m.end():]
        if re.match(r"\s*\(", rest):
            continue
        brace = re.match(r"\s*\{", rest)
        if brace:
            start = m.end() + brace.end()
            close = masked.find("}", start)
            close = len(masked) if close < 0 else close
            skip_until = close + 1
            out.append((name, expr[start:close]))
        else:
            out.append((name, ""))
    return out


def base_metric(name: str, documented: set[str]) -> str:
    """Maps histogram series (_bucket, _sum, _count) to the documented family name."""
    if name in documented:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name[: -len(suffix)] in documented:
            return name[: -len(suffix)]
    return name


# ---------------------------------------------------------------------------------------
# Dashboards


def panels(items: list[dict]) -> list[dict]:
    """Every panel, rows flattened (collapsed rows keep theirs in row['panels'])."""
    out = []
    for p in items:
        out.append(p)
        out.extend(panels(p.get("panels", [])))
    return out


def ds_uid(ds: object) -> str | None:
    """The uid of a datasource reference (object or legacy string form)."""
    if isinstance(ds, dict):
        return ds.get("uid")
    if isinstance(ds, str):
        return ds
    return None


def variable_query(var: dict) -> str:
    """The query string of a query variable (string or object form)."""
    q = var.get("query", "")
    if isinstance(q, dict):
        q = q.get("query", "")
    return q or var.get("definition", "")


def check_dashboard(path: Path, board: dict, report: Report, queries: list[Query]) -> None:
    """(a) structure of one dashboard; collects its queries."""
    name = path.name
    if not board.get("uid"):
        report.error(f"{name}: no uid")
    elif len(board["uid"]) > 40:
        report.error(f"{name}: uid {board['uid']!r} is longer than 40 characters")
    if not board.get("title"):
        report.error(f"{name}: no title")
    inputs = [i.get("name") for i in board.get("__inputs", [])]
    if "DS_PROMETHEUS" not in inputs:
        report.error(f"{name}: __inputs has no DS_PROMETHEUS datasource input (UI import)")
    body = {k: v for k, v in board.items() if k != "__inputs"}
    if "DS_PROMETHEUS" in json.dumps(body):
        report.error(f"{name}: ${{DS_PROMETHEUS}} used outside __inputs; provisioning does not "
                     "substitute it, use ${datasource}")

    variables = {v.get("name"): v for v in board.get("templating", {}).get("list", [])}
    for var in REQUIRED_VARIABLES:
        if var not in variables:
            report.error(f"{name}: template variable ${var} missing")
    ds = variables.get("datasource")
    if ds and (ds.get("type") != "datasource" or ds.get("query") != "prometheus"):
        report.error(f"{name}: $datasource must be a variable of type datasource, query prometheus")
    for vname, var in variables.items():
        if var.get("type") != "query":
            continue
        if ds_uid(var.get("datasource")) != DATASOURCE_REF:
            report.error(f"{name}: variable ${vname} does not use {DATASOURCE_REF}")
        q = variable_query(var).strip()
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\s*\)", q, re.S)
        if not m:
            report.error(f"{name}: variable ${vname}: expected label_values(metric, label), got {q!r}")
            continue
        queries.append(Query(name, f"variable ${vname}", "var", m.group(1), m.group(2)))

    ids = set()
    for p in panels(board.get("panels", [])):
        title = p.get("title") or f"panel {p.get('id')}"
        if p.get("id") in ids:
            report.error(f"{name}: duplicate panel id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        where = f"{name} / {title}"
        if ds_uid(p.get("datasource")) != DATASOURCE_REF:
            report.error(f"{where}: panel datasource is not {DATASOURCE_REF}")
        targets = p.get("targets") or []
        if not targets:
            report.error(f"{where}: no targets")
        for t in targets:
            ref = t.get("refId", "?")
            if "datasource" in t and ds_uid(t["datasource"]) != DATASOURCE_REF:
                report.error(f"{where} [{ref}]: target datasource is not {DATASOURCE_REF}")
            expr = (t.get("expr") or "").strip()
            if not expr:
                report.error(f"{where} [{ref}]: empty expr")
                continue
            check_filters(where, ref, expr, report)
            queries.append(Query(name, title, ref, expr))


def check_filters(where: str, ref: str, expr: str, report: Report) -> None:
    """Every selector filters by $job and $instance; no job value is hard-coded."""
    if re.search(r'\bjob\s*(=~|!~|!=|=)\s*"(?!\$)', expr):
        report.error(f"{where} [{ref}]: hard-coded job matcher in {expr!r}")
    for metric, matchers in selectors(expr):
        for label, var in (("job", "$job"), ("instance", "$instance")):
            if not re.search(rf'\b{label}\s*=~\s*"\{var}"', matchers):
                report.error(f'{where} [{ref}]: selector {metric} lacks {label}=~"{var}"')


# ---------------------------------------------------------------------------------------
# Rules: a small reader for the YAML subset the rules file uses (promtool checks the rest).


def _scalar(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        inner = value[1:-1]
        return inner.replace("''", "'") if value[0] == "'" else json.loads(value)
    return value


def load_rules(path: Path) -> list[Rule]:
    """Alerting rules with their expr, labels and annotations."""
    lines = path.read_text().splitlines()
    rules: list[Rule] = []
    section = None
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^(\s*)(?:- )?(\w+):\s*(.*)$", line)
        if not m:
            continue
        indent, key, value = len(m.group(1)), m.group(2), m.group(3)
        if value in ("|", ">", "|-", ">-", "|+", ">+"):
            block = []
            while i < len(lines) and (not lines[i].strip() or
                                      len(lines[i]) - len(lines[i].lstrip()) > indent):
                block.append(lines[i].strip())
                i += 1
            sep = "\n" if value.startswith("|") else " "
            value = sep.join(block).strip()
        else:
            value = _scalar(value)
        if key == "alert":
            rules.append(Rule(value, ""))
            section = None
        elif key == "record":
            section = "record"
        elif not rules or section == "record":
            continue
        elif key == "expr":
            rules[-1].expr = value
        elif key in ("labels", "annotations") and not value:
            section = key
        elif section == "labels":
            rules[-1].labels[key] = value
        elif section == "annotations":
            rules[-1].annotations[key] = value
    return rules


def check_rules(path: Path, rules: list[Rule], report: Report) -> None:
    """Every alert is labelled, annotated and has a runbook that exists."""
    if not rules:
        report.error(f"{path}: no alerting rules found")
    for r in rules:
        where = f"{path.name} / {r.name}"
        if not r.expr:
            report.error(f"{where}: no expr")
        if r.labels.get("severity") not in ("critical", "warning", "info"):
            report.error(f"{where}: severity label must be critical, warning or info")
        for key in ("summary", "description", "runbook_url"):
            if not r.annotations.get(key):
                report.error(f"{where}: annotation {key} missing")
        url = r.annotations.get("runbook_url", "")
        m = re.search(r"/(docs/runbooks/[\w.-]+\.md)$", url)
        if not m:
            report.error(f"{where}: runbook_url {url!r} does not end in docs/runbooks/<Alert>.md")
        elif not (ROOT / m.group(1)).is_file():
            report.error(f"{where}: runbook {m.group(1)} does not exist")
        elif Path(m.group(1)).stem != r.name:
            report.error(f"{where}: runbook {m.group(1)} is not named after the alert")


# ---------------------------------------------------------------------------------------
# (b) metric names against METRICS.md


def documented_metrics(docs: list[Path]) -> dict[str, set[str] | None]:
    """Documented families and their labels.

    METRICS.md documents each family as a `### name` heading followed by `- labels: a, b`
    (`-` for none); such families get their label set. Any other sensor_* name mentioned
    in the documents counts as documented with unknown labels (None).
    """
    names: dict[str, set[str] | None] = {}
    for doc in docs:
        current = None
        for line in doc.read_text().splitlines():
            heading = re.match(r"^###\s+`?(sensor_[a-z0-9_]+)`?\s*$", line)
            if heading:
                current = heading.group(1)
                names.setdefault(current, None)
                continue
            if line.startswith("#"):
                current = None
            labels = re.match(r"^-\s+labels:\s*(.*)$", line.strip())
            if current and labels:
                value = labels.group(1).strip().strip("`")
                names[current] = set() if value in ("-", "") else {
                    x.strip(" `") for x in value.split(",") if x.strip(" `")}
        for name in re.findall(r"\bsensor_[a-z0-9_]*[a-z0-9]", doc.read_text()):
            names.setdefault(name, None)
    return names


def check_documented(queries: list[Query], rules: list[Rule], docs: list[Path],
                     report: Report) -> set[str]:
    """(b) every metric used is documented, with documented labels; returns the names used."""
    documented = documented_metrics(docs)
    doc_names = " or ".join(d.name for d in docs)
    used: dict[str, set[str]] = {}
    exprs = [(q.source + " / " + q.where, q.expr, q.variable_label is None) for q in queries]
    exprs += [(f"rule {r.name}", r.expr, False) for r in rules]
    for where, expr, dashboard in exprs:
        known: set[str] = {"job", "instance"}
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where.split(" / ")[0])
        for metric, matchers in selectors(expr):
            if metric in PROMETHEUS_BUILTINS:
                continue
            base = base_metric(metric, set(documented))
            labels = documented.get(base)
            if labels is None:
                continue  # undocumented (reported below) or labels unknown
            allowed = labels | {"job", "instance"} | ({"le"} if metric.endswith("_bucket") else set())
            known |= allowed
            if dashboard and "iface" in labels and not re.search(r'\biface\s*=~\s*"\$iface"', matchers):
                report.error(f'{where}: selector {metric} has an iface label but no iface=~"$iface"')
            for label in re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers):
                if label not in allowed:
                    report.error(f"{where}: label {label} is not documented for {base} "
                                 f"(documented: {', '.join(sorted(labels)) or 'none'})")
        if any(documented.get(base_metric(n, set(documented))) is None
               for n in metric_names(expr) if n not in PROMETHEUS_BUILTINS):
            continue  # cannot judge grouping labels without every metric's labels
        for clause in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)",
                                 re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)):
            for label in (x.strip() for x in clause.split(",")):
                if label and label not in known:
                    report.error(f"{where}: grouping label {label} belongs to none of its metrics")
    for name in sorted(used):
        if name in PROMETHEUS_BUILTINS:
            continue
        if base_metric(name, set(documented)) not in documented:
            report.error(f"metric {name} (used by {', '.join(sorted(used[name]))}) is not "
                         f"documented in {doc_names}")
    return set(used)


# ---------------------------------------------------------------------------------------
# (c) live Prometheus


def api(base: str, path: str, params: dict[str, str] | None, timeout: float) -> dict:
    """GET a Prometheus API endpoint; returns the decoded JSON envelope."""
    url = base.rstrip("/") + path
    if params:
        url += "?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as e:  # 400/422 carry a JSON error body
        try:
            return json.load(e)
        except ValueError:
            return {"status": "error", "error": f"HTTP {e.code}"}
    except (urllib.error.URLError, OSError, ValueError) as e:
        return {"status": "error", "error": f"cannot reach {url}: {e}"}


def live_query_problems(base: str, queries: list[Query], allow_empty: re.Pattern[str] | None,
                        timeout: float, report: Report) -> list[str]:
    """Runs every query once; returns the problems found (empty results included)."""
    problems = []
    for q in queries:
        expr = substitute(q.expr, SUBSTITUTIONS)
        if q.variable_label:
            expr = f"count by ({q.variable_label}) ({expr})"
        res = api(base, "/api/v1/query", {"query": expr}, timeout)
        where = f"{q.source} / {q.where} [{q.ref}]"
        if res.get("status") != "success":
            problems.append(f"{where}: error {res.get('error')!r} for {expr}")
            continue
        data = res.get("data", {})
        if data.get("resultType") in ("vector", "matrix") and not data.get("result"):
            msg = f"{where}: empty result for {expr}"
            if allow_empty and allow_empty.search(q.where):
                report.warn(msg)
            else:
                problems.append(msg)
    return problems


def check_live(args: argparse.Namespace, queries: list[Query], rules: list[Rule],
               report: Report) -> None:
    """(c) queries, loaded rules and expected alert states, retried up to --retry-for."""
    allow = re.compile(args.allow_empty) if args.allow_empty else None
    deadline = time.monotonic() + args.retry_for
    while True:
        probe = api(args.prometheus, "/api/v1/status/buildinfo", None, args.timeout)
        if probe.get("status") != "success":
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
            report.error(f"Prometheus at {args.prometheus}: {probe.get('error')}")
            return
        attempt = Report()
        problems = live_query_problems(args.prometheus, queries, allow, args.timeout, attempt)
        problems += rule_problems(args, rules)
        if not problems or time.monotonic() >= deadline:
            break
        time.sleep(min(5.0, max(0.0, deadline - time.monotonic())))
    report.errors.extend(problems)
    report.warnings.extend(attempt.warnings)


def rule_problems(args: argparse.Namespace, rules: list[Rule]) -> list[str]:
    """Every alert of the rules file is loaded and healthy; expected states hold."""
    problems = []
    res = api(args.prometheus, "/api/v1/rules", {"type": "alert"}, args.timeout)
    if res.get("status") != "success":
        return [f"/api/v1/rules: {res.get('error')!r}"]
    loaded = {}
    for group in res["data"].get("groups", []):
        for r in group.get("rules", []):
            loaded[r.get("name")] = r
    if not args.skip_rules_loaded:
        for r in rules:
            got = loaded.get(r.name)
            if got is None:
                problems.append(f"alert {r.name} is not loaded in Prometheus (rule_files?)")
            elif got.get("health") not in ("ok", "unknown"):
                problems.append(f"alert {r.name}: health {got.get('health')}: {got.get('lastError')}")
    firing: dict[str, list[dict]] = {}
    if args.expect_firing or args.expect_silent:
        res = api(args.prometheus, "/api/v1/alerts", None, args.timeout)
        if res.get("status") != "success":
            return problems + [f"/api/v1/alerts: {res.get('error')!r}"]
        for a in res["data"].get("alerts", []):
            if a.get("state") == "firing":
                firing.setdefault(a["labels"].get("alertname", ""), []).append(a["labels"])
    for name in args.expect_firing:
        if name not in firing:
            problems.append(f"alert {name} is not firing")
    for name in args.expect_silent:
        if name in firing:
            problems.append(f"alert {name} is firing: {firing[name]}")
    return problems


# ---------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dashboards", type=Path, default=ROOT / "grafana" / "dashboards")
    p.add_argument("--rules", type=Path, default=ROOT / "grafana" / "rules" / "sensor-rules.yml")
    p.add_argument("--metrics-doc", type=Path, action="append", default=None,
                   help="metric documentation (default: METRICS.md and docs/detection.md)")
    p.add_argument("--list-queries", action="store_true",
                   help="print every panel and variable query (tab separated) and exit")
    p.add_argument("--expand", action="store_true",
                   help="with --list-queries, print the queries as sent to Prometheus")
    p.add_argument("--prometheus", metavar="URL", help="run every query against this Prometheus")
    p.add_argument("--allow-empty", metavar="REGEX",
                   help="panel titles whose empty result is only a warning (e.g. before attacks)")
    p.add_argument("--retry-for", type=float, default=0.0, metavar="SECONDS",
                   help="retry the live checks until they pass or this time has passed")
    p.add_argument("--timeout", type=float, default=10.0, help="HTTP timeout in seconds")
    p.add_argument("--expect-firing", action="append", default=[], metavar="ALERT")
    p.add_argument("--expect-silent", action="append", default=[], metavar="ALERT")
    p.add_argument("--skip-rules-loaded", action="store_true",
                   help="do not require the rules file's alerts to be loaded in Prometheus")
    args = p.parse_args(argv)

    report = Report()
    queries: list[Query] = []
    boards = sorted(args.dashboards.glob("*.json"))
    if not boards:
        report.error(f"no dashboards in {args.dashboards}")
    uids: dict[str, str] = {}
    for path in boards:
        try:
            board = json.loads(path.read_text())
        except ValueError as e:
            report.error(f"{path.name}: invalid JSON: {e}")
            continue
        check_dashboard(path, board, report, queries)
        uid = board.get("uid")
        if uid in uids:
            report.error(f"{path.name}: uid {uid} also used by {uids[uid]}")
        uids[uid] = path.name

    if args.list_queries:
        for q in queries:
            expr = substitute(q.expr, SUBSTITUTIONS) if args.expand else q.expr
            print(f"{q.source}\t{q.where}\t{q.ref}\t{' '.join(expr.split())}")
        return 0

    rules = load_rules(args.rules) if args.rules.is_file() else []
    if not args.rules.is_file():
        report.error(f"rules file {args.rules} not found")
    check_rules(args.rules, rules, report)

    docs = args.metrics_doc or [d for d in (ROOT / "METRICS.md", ROOT / "docs" / "detection.md")
                                if d.is_file()]
    if not docs:
        report.error("METRICS.md not found: cannot check metric names")
    else:
        check_documented(queries, rules, [d.resolve() for d in docs], report)

    if args.prometheus:
        check_live(args, queries, rules, report)

    for w in report.warnings:
        print(f"warning: {w}", file=sys.stderr)
    for e in report.errors:
        print(f"error: {e}", file=sys.stderr)
    live = " and live queries" if args.prometheus else ""
    print(f"{len(boards)} dashboards, {len(queries)} queries, {len(rules)} alert rules{live}: "
          f"{'FAILED, ' + str(len(report.errors)) + ' problems' if report.errors else 'ok'}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
