#!/usr/bin/env python3
"""Prints the ratios of the latest `cargo bench` run as the rows of the table in README.md.

Reads criterion's estimates under target/criterion (or the directory given as the first
argument). Each figure is criterion's headline estimate: the slope for linearly sampled benches,
the mean for flat-sampled ones.
"""

import json
import pathlib
import sys

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def seconds(bench):
    """Seconds per iteration of `bench` (a path below ROOT), or None if it did not run."""
    path = ROOT / bench / "new" / "estimates.json"
    if not path.exists():
        return None
    estimates = json.loads(path.read_text())
    estimate = estimates.get("slope") or estimates["mean"]
    return estimate["point_estimate"] / 1e9


def duration(s):
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    if s >= 1e-6:
        return f"{s * 1e6:.2f} µs"
    return f"{s * 1e9:.0f} ns"


def per_call(s):
    return duration(s) + "/call"


def rate(s):
    return f"{1 / s:,.0f} calls/s"


def row(what, numerator, denominator, show, goal=""):
    top, bottom = seconds(numerator), seconds(denominator)
    if top is None or bottom is None:
        print(f"| {what} | not run | | {goal} |")
        return
    if show is rate:
        ratio = bottom / top  # throughput: higher is better
    else:
        ratio = top / bottom
    print(f"| {what} | **{ratio:.2f}×** | {show(top)} vs {show(bottom)} | {goal} |")


print("| figure | ratio | absolute | goal |")
print("| --- | --- | --- | --- |")
h = "hot_path/"
row("hot path: SessionLayer (token, no refresh) / AddAuthorization, time per call",
    h + "c_session", h + "b_add_authorization", per_call, "≤ 1.10×")
row("hot path: AddAuthorization / bare ready service, time per call",
    h + "b_add_authorization", h + "a_bare", per_call)
row("hot path: SessionLayer, refresh on every response, write-behind / the same inner service bare",
    h + "d_session_refreshing", h + "d0_bare_refreshing", per_call)
for t, where, flights in (("transport/", "agent on its own thread", (1, 64)),
                          ("transport_one_thread/", "agent on the client's thread", (1,))):
    for n in flights:
        goal = "≥ 0.80×" if n == 1 else "≥ 0.90×"
        row(f"loopback, {where}, {n} in flight: SessionLayer (refreshing agent) / static header (agent not refreshing), calls/s",
            f"{t}b_session_refreshing/{n}", f"{t}a_static_header_no_refresh/{n}", rate, goal)
        row(f"loopback, {where}, {n} in flight: SessionLayer / static header, both against the refreshing agent, calls/s",
            f"{t}b_session_refreshing/{n}", f"{t}a_static_header_refreshing/{n}", rate)
        row(f"loopback, {where}, {n} in flight: SessionLayer / naive lock-truncate-rewrite-fsync per response, calls/s",
            f"{t}b_session_refreshing/{n}", f"{t}c_naive_rewrite_refreshing/{n}", rate, "> 1×")
labels = {
    "b_session/refreshing / a_static_header/no_refresh": ("SessionLayer (refreshing agent) / static header (agent not refreshing)", True),
    "b_session/refreshing / a_static_header/refreshing": ("SessionLayer / static header, both against the refreshing agent", False),
    "b_session/refreshing / c_naive_rewrite/refreshing": ("SessionLayer / naive rewrite per response", False),
    "a_static_header/refreshing / a_static_header/no_refresh": ("static header: refreshing agent / agent not refreshing (the agent's refresh alone)", False),
}
for group, where in (("transport", "agent on its own thread"), ("transport_one_thread", "agent on the client's thread")):
    for n in (1, 64):
        path = ROOT / group / f"paired-{n}.json"
        if not path.exists():
            continue
        paired = json.loads(path.read_text())
        for pair, ratio in paired["ratios"].items():
            label, with_goal = labels.get(pair, (pair, False))
            goal = ("≥ 0.80×" if n == 1 else "≥ 0.90×") if with_goal else ("> 1×" if "naive" in pair else "")
            top, bottom = (paired["rates"][case] for case in pair.split(" / "))
            print(f"| loopback, {where}, {n} in flight, paired median of {paired['rounds']} rounds: {label}, calls/s"
                  f" | **{ratio:.2f}×** | {top:,.0f} vs {bottom:,.0f} calls/s (medians) | {goal} |")
p = "processes/"
row("8 processes × 200 calls, one session file: SessionLayer / static header, wall time",
    p + "session", p + "static_header", duration)
row("8 processes × 200 calls: SessionLayer, AgentTokens::RevokedOnRefresh / static header, wall time",
    p + "session_revoked", p + "static_header", duration)
a = "agent/"
row("agent: AuthLayer verify + mint / pass-through, time per call",
    a + "c_auth_verify_mint", a + "a_pass_through", per_call)
row("agent: AuthLayer verify + mint / verify only, time per call",
    a + "c_auth_verify_mint", a + "b_auth_verify", per_call)
