"""Turning the runs into a summary, a Markdown report and a PNG chart.

Every figure is the median over the repetitions (with the min-max range for req/s); peak RSS is the
largest seen in any repetition; errors are summed. Ratios are to the nginx proxy measured in the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REFERENCE = "nginx"
LOAD_SATURATED = 0.97  # core 0 (wrk + upstream) this busy: the load side, not the contender, was the limit


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _busy(run: dict[str, Any], core: str) -> float | None:
    shares = run.get("cores", {}).get(core)
    return None if shares is None else round(shares["task"] + shares["irq"], 3)


NOISE_PREFIXES = ("other processes", "the hypervisor")


def _split_noise(run: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(flags, noise) of a run; results from before the two were recorded apart are split by wording."""
    flags = run.get("flags", [])
    if "noise" in run:
        return flags, run["noise"]
    return [f for f in flags if not f.startswith(NOISE_PREFIXES)], [f for f in flags if f.startswith(NOISE_PREFIXES)]


def rerender(directory: Path, chart_too: bool = True) -> dict[str, Path]:
    """Write results.md (and chart.png) again from a run's results.json."""
    import json

    data = json.loads((directory / "results.json").read_text())
    data["summary"] = summarize(data)
    (directory / "results.md").write_text(markdown(data))
    out = {"markdown": directory / "results.md"}
    if chart_too and chart(data, directory / "chart.png") is None:
        out["chart"] = directory / "chart.png"
    return out


def summarize(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (body, contender) in table order, measured or not."""
    runs = data.get("runs", [])
    load_core = "cpu" + str(data.get("settings", {}).get("load_cpus") or "0").split(",")[0]
    rows = []
    for body in data.get("bodies", {}):
        reference = None
        for contender in data.get("contenders", []):
            if body not in contender["bodies"]:
                continue
            mine = [r for r in runs if r["contender"] == contender["name"] and r["body"] == body
                    and not r.get("discarded")]
            row: dict[str, Any] = {"body": body, "contender": contender["name"], "label": contender["label"],
                                   "runs": len(mine)}
            if not mine:
                reason = contender.get("failed_bodies", {}).get(body) or contender.get("reason") or "not measured"
                row.update(state=contender.get("state") if contender.get("state") != "ok" else "failed",
                           reason=reason)
                rows.append(row)
                continue
            rps = [r["rps"] for r in mine]
            socket_errors: dict[str, int] = {}
            for r in mine:
                for key, value in r.get("socket_errors", {}).items():
                    socket_errors[key] = socket_errors.get(key, 0) + value
            load_busy = _median([_busy(r, load_core) for r in mine])
            foreign = _median([r.get("foreign_cores") for r in mine])
            up_share = None
            up = [r.get("upstream_requests") for r in mine]
            if all(u is not None for u in up) and sum(r["requests"] for r in mine):
                up_share = round(sum(up) / sum(r["requests"] for r in mine), 3)  # type: ignore[arg-type]
            row.update(
                state="ok",
                rps_median=_median(rps), rps_min=min(rps), rps_max=max(rps),
                p50_ms=_median([r.get("p50_ms") for r in mine]),
                p99_ms=_median([r.get("p99_ms") for r in mine]),
                cpu_us_per_req=_median([r.get("cpu_us_per_req") for r in mine]),
                cpu_cores=_median([r.get("cpu_cores") for r in mine]),
                main_thread_cores=_median([r.get("main_thread_cores") for r in mine]),
                rss_peak_mib=max((r.get("rss_peak_mib") or 0.0) for r in mine) or None,
                rss_process_peak_mib=max((r.get("rss_process_peak_mib") or 0.0) for r in mine) or None,
                non2xx=sum(r.get("non2xx", 0) for r in mine),
                socket_errors=socket_errors,
                errors=sum(r.get("errors", 0) for r in mine),
                flags=sorted({flag for r in mine for flag in _split_noise(r)[0]}),
                disturbed_runs=sum(1 for r in mine if _split_noise(r)[1]),
                foreign_max=max((max(r.get("foreign_cores") or 0.0, r.get("foreign_load_cores") or 0.0)
                                 for r in mine), default=0.0),
                load_core_busy=load_busy,
                foreign_cores_on_contender_core=foreign,
                load_saturated=load_busy is not None and load_busy >= LOAD_SATURATED,
                upstream_share=up_share,
            )
            if contender["name"] == REFERENCE:
                reference = row
            rows.append(row)
        for row in rows:
            if row["body"] != body or row["state"] != "ok":
                continue
            ok = reference is not None and reference.get("rps_median")
            row["ratio_nginx"] = round(row["rps_median"] / reference["rps_median"], 3) if ok else None
            row["p99_ratio_nginx"] = (round(row["p99_ms"] / reference["p99_ms"], 2)
                                      if ok and row.get("p99_ms") and reference.get("p99_ms") else None)
            row["cpu_ratio_nginx"] = (round(reference["cpu_us_per_req"] / row["cpu_us_per_req"], 3)
                                      if ok and row.get("cpu_us_per_req") and reference.get("cpu_us_per_req")
                                      else None)
    return rows


def _rss(row: dict[str, Any]) -> str:
    total, largest = row.get("rss_peak_mib"), row.get("rss_process_peak_mib")
    if largest is None or total is None or largest == total:
        return _fmt(total, ".1f")
    return f"{total:.1f} ({largest:.1f})"


def _fmt(value: float | None, spec: str, dash: str = "–") -> str:
    return dash if value is None else format(value, spec)


def _krps(value: float | None) -> str:
    return "–" if value is None else f"{value / 1000:.1f}k"


def markdown(data: dict[str, Any]) -> str:
    settings = data.get("settings", {})
    machine = data.get("machine", {})
    versions = data.get("versions", {})
    rows = data.get("summary") or summarize(data)
    out = ["# fastgw benchmark results", ""]
    when = data.get("started_at") or data.get("finished_at") or ""
    out.append(f"Run {when}: `{data.get('command', 'python -m benchmarks')}`")
    out.append("")
    if data.get("error"):
        out += [f"**The harness could not run: {data['error']}**", ""]
    reps, duration = settings.get("reps"), settings.get("duration_s")
    out.append(
        f"{reps} interleaved repetition(s) of {duration:g} s after a {settings.get('warmup_s', 0):g} s warm-up; "
        f"`wrk -t{settings.get('wrk_threads', 1)} -c{settings.get('connections')} --latency` and the upstream nginx "
        "on core "
        f"{settings.get('load_cpus')}, the contender alone on core {settings.get('contender_cpus')}. "
        "Medians over the repetitions; ratios are to the nginx proxy in the same run."
        if reps else ""
    )
    out.append("")
    runs = data.get("runs", [])
    dropped = [r for r in runs if r.get("discarded")]
    out.append(f"Runs dropped for noise (and run again): {len(dropped)} of {len(runs)}"
               + (": " + "; ".join(f"{r['contender']} {r['body']} ({r['discarded']})" for r in dropped[:10])
                  + (" ..." if len(dropped) > 10 else "") if dropped else "") + ".")
    out.append("")
    out += ["## Machine", "", "| | |", "|---|---|"]
    out.append(f"| CPU | {machine.get('cpus')} × {machine.get('cpu_model')} |")
    out.append(f"| memory | {machine.get('mem_gib')} GiB |")
    out.append(f"| OS, kernel | {machine.get('os')}, {machine.get('kernel')} |")
    out.append(f"| Python (harness) | {machine.get('python')} |")
    if machine.get("loadavg"):
        after = machine.get("loadavg_after")
        out.append(f"| load average before / after | {machine['loadavg'][0]:.2f}"
                   + (f" / {after[0]:.2f}" if after else "") + " |")
    if machine.get("cpu_calibration_ms"):
        after = machine.get("cpu_calibration_ms_after")
        out.append(f"| CPU yardstick before / after (ms, lower is faster) | {machine['cpu_calibration_ms']}"
                   + (f" / {after}" if after else "") + " |")
    for name, version in versions.items():
        out.append(f"| {name} | {version if version is not None else 'n/a'} |")
    out.append("")

    bodies = data.get("bodies", {})
    notes: dict[str, str] = {}
    for body, info in bodies.items():
        mine = [r for r in rows if r["body"] == body]
        if not mine:
            continue
        out += [f"## {info['label']} body (`{info['path']}` on the upstream)", ""]
        out.append("| contender | req/s (median) | min–max | × nginx | p50 ms | p99 ms | p99 × nginx "
                   "| CPU µs/req | CPU × nginx | cores used | peak RSS MiB (largest process) | errors |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in mine:
            if r["state"] != "ok":
                state = {"unavailable": "not available yet", "skipped": "skipped"}.get(r["state"], "FAILED")
                out.append(f"| {r['label']} | {state} | | | | | | | | | | |")
                notes.setdefault(r["contender"], f"**{r['label']}** — {state}: {r.get('reason', '')}")
                continue
            marks = ""
            if r.get("load_saturated"):
                marks += " †"
            errors = "0"
            if r["errors"]:
                socket = ", ".join(f"{k} {v}" for k, v in r["socket_errors"].items() if v)
                errors = f"**{r['errors']}** ({r['non2xx']} non-2xx" + (f", {socket}" if socket else "") + ")"
            flags = [f for f in r.get("flags", []) if not f.startswith("errors")]
            if flags:
                errors += " ⚠ " + "; ".join(flags)
            if r.get("disturbed_runs"):
                errors += (f" ~ {r['disturbed_runs']}/{r['runs']} run(s) disturbed (others used up to "
                           f"{r['foreign_max']:.0%} of a core)")
            label = r["label"] + (" ⚠" if r["errors"] or flags else "") + (" ~" if r.get("disturbed_runs") else "")
            out.append(
                f"| {label} | {_fmt(r['rps_median'], ',.0f')}{marks} | {_krps(r['rps_min'])}–{_krps(r['rps_max'])} "
                f"| {_fmt(r.get('ratio_nginx'), '.2f')} | {_fmt(r['p50_ms'], '.2f')} | {_fmt(r['p99_ms'], '.2f')} "
                f"| {_fmt(r.get('p99_ratio_nginx'), '.2f')} | {_fmt(r['cpu_us_per_req'], '.1f')} "
                f"| {_fmt(r.get('cpu_ratio_nginx'), '.2f')} | {_fmt(r['cpu_cores'], '.2f')} "
                f"| {_rss(r)} | {errors} |"
            )
        out.append("")
    if any(r.get("load_saturated") for r in rows):
        out += [f"† core 0 (wrk + upstream) was ≥ {LOAD_SATURATED:.0%} busy: this req/s is capped by the load "
                "side, so it under-states the contender; CPU µs/req does not depend on that.", ""]
    if any(r.get("disturbed_runs") for r in rows):
        out += ["~ other processes on the machine used more than 5 % of a core during some repetitions even "
                "after the retries; their req/s is lower than it would be on a quiet machine, CPU µs/req "
                "much less affected.", ""]
    paired = paired_ratios(data)
    if paired:
        out += ["## Per-round ratios (the paired rig)", "",
                "Each round ran every contender once, back to back; each ratio is taken within one round "
                "(req/s ÷ nginx's, nginx's CPU µs/req ÷ the contender's), then the median and range over the "
                "rounds: drift between rounds cancels (docs/PERF.md).", "",
                "| body | contender | rounds | req/s × nginx (median, range) | CPU × nginx (median, range) "
                "| CPU µs/req (median) |", "|---|---|---:|---:|---:|---:|"]
        for r in paired:
            out.append(f"| {r['body']} | {r['label']} | {r['rounds']} | {r['rps'][0]:.3f} ({r['rps'][1]:.2f}–"
                       f"{r['rps'][2]:.2f}) | {_paired_cell(r['cpu'])} | {_fmt(r['cpu_us'], '.1f')} |")
        out.append("")
    if notes:
        out += ["## Not measured", ""] + [f"- {text}" for text in notes.values()] + [""]
    for contender in data.get("contenders", []):
        if contender.get("interface"):
            out.append(f"- {contender['label']}: `fastgw validate` chose the {contender['interface']} interface.")
    out += ["", "Columns: see benchmarks/README.md. × nginx = contender ÷ nginx proxy for req/s and p99; "
            "CPU × nginx = nginx's CPU µs/req ÷ the contender's (higher is better, like req/s). "
            "⚠ marks runs with errors or failed sanity checks; they are reported, not dropped.", ""]
    return "\n".join(out)


def paired_ratios(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Per-round ratios to nginx, for runs of two rounds or more: one row per (body, contender)."""
    runs = [r for r in data.get("runs", []) if not r.get("discarded") and r.get("rps")]
    if (data.get("settings", {}).get("reps") or 0) < 2:
        return []
    labels = {c["name"]: c["label"] for c in data.get("contenders", [])}
    nginx = {(r["body"], r["rep"]): r for r in runs if r["contender"] == "nginx"}
    rows = []
    for body in data.get("bodies", {}):
        for name in labels:
            if name == "nginx":
                continue
            pairs = [(r, nginx[(body, r["rep"])]) for r in runs
                     if r["contender"] == name and r["body"] == body and (body, r["rep"]) in nginx]
            if len(pairs) < 2:
                continue
            rps = [r["rps"] / n["rps"] for r, n in pairs]
            cpu = [n["cpu_us_per_req"] / r["cpu_us_per_req"] for r, n in pairs
                   if r.get("cpu_us_per_req") and n.get("cpu_us_per_req")]
            rows.append({"body": body, "contender": name, "label": labels[name], "rounds": len(pairs),
                         "rps": (_median(rps), min(rps), max(rps)),
                         "cpu": (_median(cpu), min(cpu), max(cpu)) if cpu else None,
                         "cpu_us": _median([r.get("cpu_us_per_req") for r, _ in pairs])})
    return rows


def _paired_cell(values: tuple[float, float, float] | None) -> str:
    return f"{values[0]:.3f} ({values[1]:.2f}–{values[2]:.2f})" if values else "n/a"


KIND_COLOURS = {"fastgw": "#1f77b4", "granian-hello": "#ff7f0e", "granian-floor": "#2ca02c"}
PEER_COLOUR = "#8c8c8c"


def chart(data: dict[str, Any], path: Path) -> str | None:
    """A PNG with one panel per body size: median req/s with the min-max range. None, or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    rows = [r for r in (data.get("summary") or summarize(data)) if r["state"] == "ok"]
    bodies = [b for b in data.get("bodies", {}) if any(r["body"] == b for r in rows)]
    if not bodies:
        return "no measured runs"
    kinds = {c["name"]: c["kind"] for c in data.get("contenders", [])}
    height = max(2.5, 0.45 * max(sum(1 for r in rows if r["body"] == b) for b in bodies) + 1.2)
    fig, axes = plt.subplots(len(bodies), 1, figsize=(9, height * len(bodies)), squeeze=False)
    for ax, body in zip(axes[:, 0], bodies, strict=True):
        mine = [r for r in rows if r["body"] == body]
        labels = [r["label"] for r in mine]
        medians = [r["rps_median"] / 1000 for r in mine]
        low = [(r["rps_median"] - r["rps_min"]) / 1000 for r in mine]
        high = [(r["rps_max"] - r["rps_median"]) / 1000 for r in mine]
        colours = [KIND_COLOURS.get(kinds.get(r["contender"], ""), PEER_COLOUR) for r in mine]
        y = list(range(len(mine)))
        ax.barh(y, medians, xerr=[low, high], color=colours, capsize=3)
        ax.set_yticks(y, labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("thousand requests/s (median, min–max)")
        ax.set_title(f"{data['bodies'][body]['label']} body — one core per contender", fontsize=10)
        top = max(medians) if medians else 1
        for yi, r, m in zip(y, mine, medians, strict=True):
            ratio = r.get("ratio_nginx")
            text = f"{m:.1f}k" + (f"  ({ratio:.2f}× nginx)" if ratio is not None else "")
            if r["errors"]:
                text += "  errors!"
            ax.text(m + top * 0.02, yi, text, va="center", fontsize=8)
        ax.set_xlim(0, top * 1.45)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
