"""The report page: the run's data as JSON, rendered by one Jinja template with plotly.js embedded.

The same page serves the self-contained report file and the live dashboard; only where plotly.js comes
from and whether the page polls differ.
"""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from functools import cache, lru_cache
from importlib import resources
from typing import Any

import jinja2
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import DiffLexer

import idealab
from idealab.gcpause import paused_gc
from idealab.report import iso
from idealab.views.data import Experiment, RunSnapshot, log_tail
from idealab.views.summary import epoch_rows, totals

DIFF_LIMIT = 60_000  # characters of one diff shown in the report; the export keeps every diff whole
# Up to this many experiments, every diff and log tail is embedded. Beyond it, only those of the featured
# experiments are (see `featured`): ten thousand highlighted diffs would make a report of hundreds of MB.
EMBED_ALL_UP_TO = 1000
FEATURED_TOP = 100  # the best by value, and as many of the latest, get their details embedded
DATA_SCRIPT_ID = "idealab-data"


# ---- the data the page renders -------------------------------------------------------------------------


def report_data(snap: RunSnapshot, embed: set[int] | None = None) -> dict[str, Any]:
    """Everything the page draws, as JSON-able values (the report embeds it; the dashboard serves it).

    The diff and log tail are embedded for the experiments in `embed` (default: `featured`); the others
    carry `details: false`, and the page says where to find them (the dashboard fetches them on demand)."""
    with paused_gc():
        return _report_data(snap, embed)


def _report_data(snap: RunSnapshot, embed: set[int] | None) -> dict[str, Any]:
    journal = snap.journal  # one journal: the suspect rule reads the whole run once
    best = journal.best()
    base = snap.baseline
    shown = featured(snap) if embed is None else embed
    if snap.diffs is not None:
        snap.diffs.load(shown)  # one read for every diff the page embeds
    return {
        "metric": {"name": snap.metric_name, "goal": snap.goal.value},
        "baseline": {
            "value": base.value,
            "low": base.low,
            "high": base.high,
            "status": snap.run.baseline_status,
            "reason": snap.run.baseline_reason,
            "id": None if snap.baseline_experiment is None else snap.baseline_experiment.id,
        },
        "best_id": None if best is None else best.id,
        "ideas_per_epoch": int(snap.run.config.get("ideas_per_epoch") or 1),
        "epochs": [asdict(row) for row in epoch_rows(snap)],
        "experiments": [_experiment_json(snap, e, e.id in shown) for e in snap.experiments],
        "details_embedded": len(shown & {e.id for e in snap.experiments}),
        "totals": totals(snap),
        "meta": run_metadata(snap),
    }


def featured(snap: RunSnapshot) -> set[int]:
    """The experiments whose diff and log tail a report embeds: every one in a run of up to
    EMBED_ALL_UP_TO; beyond, the best FEATURED_TOP by value, every winner, the confirmed best, and the
    FEATURED_TOP latest (what a reader of a running search opens)."""
    if len(snap.experiments) <= EMBED_ALL_UP_TO:
        return {e.id for e in snap.experiments}
    journal = snap.journal
    chosen = {e.id for e in journal.ranked()[:FEATURED_TOP]} | {e.id for e in journal.winners()}
    confirmed = journal.confirmed_best()
    latest = sorted(snap.experiments, key=lambda e: e.id)[-FEATURED_TOP:]
    return chosen | {e.id for e in latest} | ({confirmed.id} if confirmed else set())


def experiment_details(snap: RunSnapshot, e: Experiment) -> dict[str, Any]:
    """The heavy part of an experiment's entry: its highlighted diff and its log tail."""
    diff = snap.diff_of(e)
    return {"diff_html": None if diff is None else highlight_diff(diff), "log_tail": log_tail(snap.workdir, e)}


def experiment_row(snap: RunSnapshot, e: Experiment) -> dict[str, Any]:
    """An experiment's entry without its details (the listing pages of the dashboard)."""
    return _experiment_json(snap, e, False)


def _experiment_json(snap: RunSnapshot, e: Experiment, details: bool) -> dict[str, Any]:
    time = e.finished_at or e.started_at or e.created_at
    journal = snap.journal
    audit = journal.audit(e)
    return {
        "id": e.id,
        "epoch": e.epoch,
        "idx": e.idx,
        "kind": e.kind,
        "status": e.status.value,
        "metric": e.metric,
        "low": e.measured.low,
        "high": e.measured.high,
        "beats_baseline": journal.beats_baseline(e),
        "flags": journal.flags(e),  # why a result is suspect, then suspect / cleared / hack
        "audit": None if audit is None else audit.to_json(),
        "idea": e.idea,
        "reason": e.reason,
        "parents": list(e.parents),
        "strategy": e.payload.get("strategy"),
        "time": time,
        "created_iso": iso(e.created_at),
        "duration_s": None if e.started_at is None or e.finished_at is None else e.finished_at - e.started_at,
        "attempts": e.attempts,
        "job_hours": e.job_hours,
        "gpu_hours": e.gpu_hours,
        "llm_cost_usd": e.llm.cost_usd,
        "llm_calls": e.llm.calls,
        "details": details,
        **(experiment_details(snap, e) if details else {"diff_html": None, "log_tail": ""}),
    }


def run_metadata(snap: RunSnapshot) -> list[tuple[str, str]]:
    """(label, value) rows: environment, preset, models, seed, hardware, versions."""
    run, cfg, manifest = snap.run, snap.run.config, snap.run.manifest
    spec = manifest.get("run", {})
    rows = [
        ("environment", f"{run.env_name}{f' (preset {run.preset})' if run.preset else ''}"),
        ("environment directory", run.env_root),
        ("metric", f"{snap.metric_name} ({snap.goal.value})"),
        ("command", f"{spec.get('command', '')} (time limit {spec.get('timeout_s')} s)"),
        ("ideator", str(cfg.get("ideator"))),
        ("ideator model", str(cfg.get("model") or "none")),
        ("implementer model", str(cfg.get("implementer_model") or cfg.get("model") or "none")),
        ("seed", str(cfg.get("seed"))),
        ("search", f"{cfg.get('epochs')} epochs x {cfg.get('ideas_per_epoch')} ideas, next epoch at "
                   f"{cfg.get('next_epoch_at')}, batch {cfg.get('batch_size')}"),
        ("cost cap", "none" if cfg.get("max_cost_usd") is None else f"${cfg.get('max_cost_usd')}"),
        ("started", str(iso(run.created_at))),
        ("GPUs per job", str(spec.get("gpus", 0))),
        ("GPUs used", ",".join(map(str, snap.gpus_used())) or "none (CPU slots)"),
    ]  # fmt: skip
    system = cfg.get("system")
    if isinstance(system, dict):  # recorded when the run started (idealab.sysinfo)
        rows += [(f"run host: {key}", _text(value)) for key, value in sorted(system.items())]
    rows += [
        ("database schema", snap.schema_version),
        ("report made with", f"idealab {idealab.__version__}, Python {platform.python_version()}"),
    ]
    return rows


def _text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in sorted(value.items()))
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)


# ---- diffs -------------------------------------------------------------------------------------------------


@cache
def _diff_tools() -> tuple[Any, Any]:
    return DiffLexer(), HtmlFormatter(nowrap=True)  # a formatter builds its style table once: reuse it


@lru_cache(maxsize=4096)  # the dashboard rebuilds its data on every change; a stored diff never changes
def highlight_diff(diff: str) -> str:
    if len(diff) > DIFF_LIMIT:
        diff = diff[:DIFF_LIMIT] + f"\n... ({len(diff) - DIFF_LIMIT} more characters in `idealab export`)\n"
    lexer, formatter = _diff_tools()
    return str(highlight(diff, lexer, formatter))


@cache
def _diff_css() -> str:
    return str(HtmlFormatter(style="default").get_style_defs(".diff"))


# ---- the page ---------------------------------------------------------------------------------------------


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("idealab.views", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
    )


@cache
def static_text(name: str) -> str:
    return (resources.files("idealab.views") / "static" / name).read_text(encoding="utf-8")


@cache
def plotly_js() -> str:
    """plotly.js as the plotly package ships it (no network: the report embeds it)."""
    return (resources.files("plotly") / "package_data" / "plotly.min.js").read_text(encoding="utf-8")


def script_json(value: Any) -> str:
    """JSON safe inside <script>: no '<' (so no '</script>'), and no NaN, which JSON.parse rejects."""
    return json.dumps(value, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")


def render_page(
    data: dict[str, Any], title: str, live: dict[str, Any] | None = None, plotly_src: str | None = None
) -> str:
    """The report page. `plotly_src` set: plotly.js is loaded from there instead of embedded."""
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title,
        css=static_text("report.css"),
        diff_css=_diff_css(),
        app_js=static_text("report.js"),
        plotly_js="" if plotly_src else plotly_js(),
        plotly_src=plotly_src,
        data_json=script_json(data),
        live=live,
        live_json=script_json(live) if live else "",
        version=idealab.__version__,
        generated_at=iso(datetime.now(UTC).timestamp()),
    )


def page_title(snap: RunSnapshot) -> str:
    return f"{snap.run.env_name}{f' ({snap.run.preset})' if snap.run.preset else ''} · {snap.workdir.name}"


def render_report(snap: RunSnapshot) -> str:
    return render_page(report_data(snap), page_title(snap))
