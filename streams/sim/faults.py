"""The fault catalogue: who is hit, when, and which events the engine must produce for it.

`ground_truth(cfg)` is computed from the config alone (no simulation), so a test or the demo can
compare what the monitor reported with what was injected. Only faults list unexplained events; all
other traffic is race noise by construction (see `streams.sim.config`).

Each fault account holds a fixed book and gets no random fills, so nothing but its fault touches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from streams.sim.accounts import Account, account_ids, fault_account_ids
from streams.sim.config import SimConfig
from streams.sim.market import LATE_MARK_SYMBOL


@dataclass(frozen=True, slots=True)
class Expect:
    """One event the engine must emit. `label` is the mismatch class, the witness status, the flip's
    `position_mismatch` ("true"/"false"), the unvaluable source, or a transition's target source;
    `resolved` says whether it must be resolved by the end of the day (None: either); `at_ms`, when
    set, is when it opens if that is not the fault's start (e.g. only once the source flips)."""

    event_type: str
    account_id: str | None
    symbol: str | None
    label: str
    resolved: bool | None = None
    at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    account_id: str | None
    symbol: str | None
    start_ms: int
    end_ms: int | None
    expected: tuple[Expect, ...]
    stale_ep3: int = 0  # EP3 events the engine must count as stale (duplicates / reorders)
    note: str = ""


# Fault account roles, in the order of `fault_account_ids`.
ROLES = ("dormant", "late_mark", "gap_rre", "gap_ep3", "phantom", "persistent", "dup", "witness")
DORMANT_XAU = Decimal(13)


def roles(cfg: SimConfig) -> dict[str, str]:
    return dict(zip(ROLES, fault_account_ids(cfg), strict=True))


def fault_books(cfg: SimConfig) -> list[Account]:
    """The fault accounts with their fixed books and margins (see each fault for why)."""
    ids = roles(cfg)
    d = Decimal
    books = [
        # 13 dormant XAU (IM ~7.5k) on equity 4k: RE says no orders, a cache without the XAU says yes.
        Account(ids["dormant"], False, d(4_000), d(200), symbols=("BTC-PERP", "XAU-PERP"),
                truth={"BTC-PERP": d("0.010"), "XAU-PERP": DORMANT_XAU}),
        Account(ids["late_mark"], False, d(50_000), d(0), symbols=("ETH-PERP", LATE_MARK_SYMBOL),
                truth={"ETH-PERP": d("2.50"), LATE_MARK_SYMBOL: d(500)}),
        # avail ~ +3.3k at RE; the gateway's extra open-orders margin (5k) pushes its avail below 0.
        Account(ids["gap_rre"], False, d(6_000), d(1_000), symbols=("AVAX-PERP", "SOL-PERP"),
                truth={"AVAX-PERP": d("50.0"), "SOL-PERP": d("100.0")}),
        Account(ids["gap_ep3"], False, d(6_000), d(1_000), symbols=("AVAX-PERP", "SOL-PERP"),
                truth={"AVAX-PERP": d("-50.0"), "SOL-PERP": d("100.0")}),
        Account(ids["phantom"], False, d(80_000), d(500), symbols=("ETH-PERP",), truth={"ETH-PERP": d("4.00")}),
        Account(ids["persistent"], False, d(80_000), d(500), symbols=("SOL-PERP",), truth={"SOL-PERP": d("25.0")}),
        Account(ids["dup"], False, d(80_000), d(0), symbols=("BTC-PERP",), truth={"BTC-PERP": d("0.250")}),
        Account(ids["witness"], False, d(80_000), d(0), symbols=("AVAX-PERP", "ETH-PERP"),
                truth={"AVAX-PERP": d("40.0"), "ETH-PERP": d("12.00")}),
    ]
    for acct in books:
        acct.trades = False
    return books


# (fraction of the day) when each fault happens; `end` where it has one.
WHEN = {
    "bookmark": 0.08, "missing_mark": 0.15, "dropped_dormant": 0.20, "oom_gap_flip": 0.25,
    "oom_gap_flip_end": 0.28, "phantom": 0.30, "phantom_end": 0.36, "persistent": 0.38,
    "persistent_end": 0.48, "duplicate_seq": 0.42, "source_flip": 0.50, "oom_gap_flip_ep3": 0.65,
    "oom_gap_flip_ep3_end": 0.70, "witness_only_drop": 0.60, "source_flip_end": 0.80,
}
PHANTOM = ("LINK-PERP", Decimal(40))
PERSISTENT_DELTA = Decimal(3)
GAP_EXTRA_OOM = Decimal(5_000)  # the gateway's extra open-orders margin during a gap flip
WITNESS_DROP = "AVAX-PERP"
WITNESS_RE_DELAY_MS = 400


def ground_truth(cfg: SimConfig) -> list[Fault]:
    """Every injected fault of `cfg` with the events it must produce, in time order."""
    builders = {"bookmark": _bookmark, "missing_mark": _missing_mark, "dropped_dormant": _dropped,
                "oom_gap_flip": _gap_flips, "phantom": _phantom, "persistent": _persistent,
                "duplicate_seq": _dup, "source_flip": _source_flip, "witness_only_drop": _witness}
    out: list[Fault] = []
    for kind in cfg.faults:
        out.extend(builders[kind](cfg))
    return sorted(out, key=lambda f: (f.start_ms, f.kind))


def _bookmark(cfg: SimConfig) -> list[Fault]:
    first_mm = account_ids(cfg)[0]
    return [Fault("bookmark", a, None, cfg.at(WHEN["bookmark"]), None, (),
                  note="empty EP3 SNAPSHOT: marks ready, replaces nothing")
            for a in (roles(cfg)["dormant"], first_mm)]


def _missing_mark(cfg: SimConfig) -> list[Fault]:
    a = roles(cfg)["late_mark"]
    return [Fault("missing_mark", a, LATE_MARK_SYMBOL, cfg.start_ms, cfg.at(WHEN["missing_mark"]),
                  (Expect("unvaluable", a, LATE_MARK_SYMBOL, "EP3", True),),
                  note="the symbol's first mark arrives late; held position unvaluable until then")]


def _dropped(cfg: SimConfig) -> list[Fault]:
    a = roles(cfg)["dormant"]
    expected = [Expect("position_mismatch", a, "XAU-PERP", "never_in_cache", False),
                Expect("witness_check", a, "XAU-PERP", "never_in_cache", False)]
    if "source_flip" in cfg.faults:
        expected.append(Expect("avail_gap_flip", a, None, "true", True, cfg.at(WHEN["source_flip"])))
    return [Fault("dropped_dormant", a, "XAU-PERP", cfg.at(WHEN["dropped_dormant"]), None, tuple(expected),
                  note="EP3 full snapshot omits the dormant 13-lot XAU-PERP; on the EP3 source the "
                       "gateway lets an over-margined account trade")]


def _gap_flips(cfg: SimConfig) -> list[Fault]:
    r = roles(cfg)
    return [Fault("oom_gap_flip", a, None, cfg.at(WHEN[k]), cfg.at(WHEN[k + "_end"]),
                  (Expect("avail_gap_flip", a, None, "false", True),),
                  note="the gateway counts open-orders margin RE doesn't; positions agree")
            for a, k in ((r["gap_rre"], "oom_gap_flip"), (r["gap_ep3"], "oom_gap_flip_ep3"))]


def _phantom(cfg: SimConfig) -> list[Fault]:
    a, (s, _) = roles(cfg)["phantom"], PHANTOM
    return [Fault("phantom", a, s, cfg.at(WHEN["phantom"]), cfg.at(WHEN["phantom_end"]),
                  (Expect("position_mismatch", a, s, "phantom", True), Expect("witness_check", a, s, "phantom", True)),
                  note="EP3 reports a position nobody traded; later set flat")]


def _persistent(cfg: SimConfig) -> list[Fault]:
    a = roles(cfg)["persistent"]
    return [Fault("persistent", a, "SOL-PERP", cfg.at(WHEN["persistent"]), cfg.at(WHEN["persistent_end"]),
                  (Expect("position_mismatch", a, "SOL-PERP", "persistent", True),
                   Expect("witness_check", a, "SOL-PERP", "mismatch", True)),
                  note=f"EP3 off by {PERSISTENT_DELTA} for minutes, then corrected")]


def _dup(cfg: SimConfig) -> list[Fault]:
    a = roles(cfg)["dup"]
    return [Fault("duplicate_seq", a, "BTC-PERP", cfg.at(WHEN["duplicate_seq"]), None, (), stale_ep3=2,
                  note="an EP3 UPDATE delivered twice, then an older seq with a wrong qty: counted, not applied")]


def _source_flip(cfg: SimConfig) -> list[Fault]:
    return [Fault("source_flip", None, None, cfg.at(WHEN["source_flip"]), cfg.at(WHEN["source_flip_end"]),
                  (Expect("source_transition", None, None, "EP3"), Expect("source_transition", None, None,
                                                                          "RISK_ENGINE")),
                  note="ORDER_GATEWAY_POSITIONS_SOURCE flipped to ep3 and back")]


def _witness(cfg: SimConfig) -> list[Fault]:
    a = roles(cfg)["witness"]
    return [Fault("witness_only_drop", a, WITNESS_DROP, cfg.at(WHEN["witness_only_drop"]), None,
                  (Expect("witness_check", a, WITNESS_DROP, "never_in_cache", False),
                   Expect("position_mismatch", a, WITNESS_DROP, "propagation_race", True)),
                  note="EP3 and RE both lose the position; only the fills ledger still holds it")]
