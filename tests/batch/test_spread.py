"""jobsafe_ops.batch.spread: which host runs which label of a spread batch (pure), and the
plan-time refusal of cross-host chains (through the real playbook loader)."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

import pytest

from jobsafe_ops.batch import spread
from jobsafe_ops.batch.fleet import check_plans, share_plan
from jobsafe_ops.batch.playbook import parse_playbook, plan_batch
from jobsafe_ops.errors import ConfigError, RefusedError
from jobsafe_ops.inventory import GroupSpec, Host
from jobsafe_ops.scheduler.pueue import parse_state
from tests.status_data import QUEUED, RUNNING, done, state, task

G = 1024**3


def cap(host: str, slots: int, backlog: int = 0, group: str = "p1") -> spread.Capacity:
    return spread.Capacity(host, group, slots, backlog, f"{slots} slot(s)")


def view(host: str, slots: int = 2, backlog: int = 0, present: dict[str, str] | None = None,
         recorded: dict[str, str] | None = None) -> spread.HostView:
    return spread.HostView(host, present or {}, recorded or {}, {"p1": cap(host, slots, backlog)})


def labels(n: int, group: str = "p1") -> list[tuple[str, str]]:
    return [(f"j{i:05d}", group) for i in range(n)]


# ---- capacity ------------------------------------------------------------------------

def test_slots_are_the_tightest_of_max_cores_and_memory() -> None:
    c = spread.capacity("a", "p1", parallel=2, max_parallel=8, job_memory=2 * G, nproc=16,
                        mem_available=7 * G, backlog=3)
    assert c.slots == 3 and c.backlog == 3
    assert "7.0G free / 2.0G per job = 3" in c.reason and "3 already queued" in c.reason
    c = spread.capacity("a", "p1", parallel=2, max_parallel=8, job_memory=None, nproc=4,
                        mem_available=None, backlog=0)
    assert c.slots == 4 and "4 cores" in c.reason
    c = spread.capacity("a", "p1", parallel=6, max_parallel=4, job_memory=None, nproc=64,
                        mem_available=None, backlog=0)
    assert c.slots == 6  # the daemon already runs 6 at once: max below it is stale
    c = spread.capacity("a", "p1", parallel=2, max_parallel=4, job_memory=4 * G, nproc=8,
                        mem_available=G, backlog=0)
    assert c.slots == 1  # not even one job fits: still one slot, never zero


# ---- new labels: by capacity -----------------------------------------------------------

def test_new_labels_follow_the_capacity_weights() -> None:
    a = spread.assign(labels(1400), ["a", "b", "c"],
                      {"a": view("a", 8), "b": view("b", 4), "c": view("c", 2)})
    n = Counter(a.owner.values())
    assert n == {"a": 800, "b": 400, "c": 200}
    assert set(a.how.values()) == {"new"}
    assert list(a.owner) == [lbl for lbl, _ in labels(1400)]  # plan order kept


def test_work_already_queued_counts_against_a_host() -> None:
    # b is as big as a but has 40 tasks waiting: a takes the first 40, then they alternate
    a = spread.assign(labels(60), ["a", "b"], {"a": view("a", 2), "b": view("b", 2, 40)})
    assert Counter(a.owner.values()) == {"a": 50, "b": 10}


def test_groups_are_balanced_separately() -> None:
    views = {h: spread.HostView(h, {}, {}, {"p1": cap(h, 1), "p2": cap(h, 1, group="p2")})
             for h in ("a", "b")}
    a = spread.assign([("x1", "p1"), ("x2", "p1"), ("y1", "p2"), ("y2", "p2")], ["a", "b"],
                      views)
    assert a.owner == {"x1": "a", "x2": "b", "y1": "a", "y2": "b"}


# ---- sticky, exactly once ----------------------------------------------------------------

def test_a_recorded_assignment_is_kept_whatever_the_capacity() -> None:
    first = spread.assign(labels(10), ["a", "b"], {"a": view("a", 1), "b": view("b", 1)})
    recorded = dict(first.owner)
    # a rerun: b is now much bigger, a is busy; nothing moves
    again = spread.assign(labels(10), ["a", "b"],
                          {"a": view("a", 1, 100, recorded=recorded),
                           "b": view("b", 64, recorded=recorded)})
    assert again.owner == first.owner and set(again.how.values()) == {"kept"}
    assert not again.changed_for(recorded)


def test_a_label_present_on_a_host_is_not_added_anywhere_else() -> None:
    present = {"j00000": "running", "j00001": "success", "j00002": "failed",
               "j00003": "submitted"}
    a = spread.assign(labels(4), ["a", "b"],
                      {"a": view("a", 1), "b": view("b", 100, present=present)})
    assert a.owner == {lbl: "b" for lbl in present}
    assert set(a.how.values()) == {"present"}  # a failed one is retried where it ran


def test_a_label_found_on_two_hosts_is_a_conflict_kept_on_its_recorded_host() -> None:
    rec = {"j00000": "b"}
    a = spread.assign(labels(1), ["a", "b"],
                      {"a": view("a", present={"j00000": "success"}, recorded=rec),
                       "b": view("b", present={"j00000": "queued"}, recorded=rec)})
    assert a.owner == {"j00000": "b"} and a.conflicts == (("j00000", ("a", "b")),)


def test_a_down_host_gets_no_new_work_and_keeps_its_labels_pending() -> None:
    rec = {"j00000": "a", "j00001": "b", "j00002": "a"}
    a = spread.assign(labels(6), ["a", "b", "c"],
                      {"b": view("b", recorded=rec), "c": view("c", recorded=rec)},
                      down={"a": "unreachable"})
    assert a.owner["j00000"] == a.owner["j00002"] == "a"  # never moved silently
    assert {a.owner[f"j0000{i}"] for i in (3, 4, 5)} <= {"b", "c"}
    assert a.pending() == {"a": 2}
    assert a.why("a") == "no new work (failing: unreachable)"
    d = a.to_dict()
    assert d["pending"] == {"a": 2} and d["labels"] == 6
    assert {h["host"]: h["down"] for h in d["hosts"]} == {"a": True, "b": False, "c": False}


def test_a_host_not_listed_keeps_its_recorded_labels() -> None:
    rec = {"j00000": "c", "j00001": "a"}
    a = spread.assign(labels(2), ["a", "b"], {"a": view("a", recorded=rec), "b": view("b")})
    assert a.owner == {"j00000": "c", "j00001": "a"}
    assert a.pending() == {"c": 1} and "not listed" in a.why("c")


# ---- --reassign-from ---------------------------------------------------------------------

def test_reassign_from_a_gone_host_moves_every_label_not_done_elsewhere() -> None:
    rec = {"j00000": "a", "j00001": "a", "j00002": "b", "j00003": "a"}
    a = spread.assign(labels(4), ["b", "c"],
                      {"b": view("b", present={"j00002": "queued"}, recorded=rec),
                       "c": view("c", recorded=rec)}, reassign_from="a")
    assert a.owner["j00002"] == "b" and a.how["j00002"] == "present"
    assert {a.owner[x] for x in ("j00000", "j00001", "j00003")} <= {"b", "c"}
    assert sorted(m[0] for m in a.moved) == ["j00000", "j00001", "j00003"]
    assert all(m[1] == "a" for m in a.moved) and a.pending() == {}


def test_reassign_from_a_live_host_keeps_its_successes_and_moves_its_failures() -> None:
    rec = {"j00000": "a", "j00001": "a"}
    a = spread.assign(labels(2), ["a", "b"],
                      {"a": view("a", present={"j00000": "success", "j00001": "failed"},
                                 recorded=rec),
                       "b": view("b", recorded=rec)}, reassign_from="a")
    assert a.owner == {"j00000": "a", "j00001": "b"}
    assert a.moved == (("j00001", "a", "b"),)


def test_reassign_refused_while_the_host_still_runs_one_of_its_labels() -> None:
    rec = {"j00000": "a", "j00001": "a"}
    with pytest.raises(RefusedError, match=r"1 of its label\(s\) queued or running "
                       r"\(first j00001\)"):
        spread.assign(labels(2), ["b"],
                      {"a": view("a", present={"j00001": "running"}, recorded=rec),
                       "b": view("b", recorded=rec)}, reassign_from="a")


# ---- what a host has of the batch ----------------------------------------------------------

def test_presence_reads_pueue_state_receipts_ledger_and_done_receipts() -> None:
    st = parse_state(state(
        task(0, "x", done("Success")), task(1, "y", done({"Failed": 1})),
        task(2, "y-retry-1", QUEUED), task(3, "z", RUNNING), task(4, "w", QUEUED, group="p2"),
        task(5, "other", QUEUED), groups={"p1": "Running", "p2": "Running"}))
    plan = [(lbl, "p1") for lbl in ("x", "y", "z", "w", "r", "s", "u")]
    got = spread.presence(plan, st, receipts=["r"], succeeded=["s-retry-1"],
                          done={"u": "1"})
    # w is the plan's label in p1, not the p2 task of the same name; "other" is not ours
    assert got == {"x": "success", "y": "queued", "z": "running", "r": "submitted",
                   "s": "success", "u": "failed"}
    assert spread.backlog(st, "p1") == 3


def test_spread_file_round_trips_labels_with_spaces() -> None:
    owner = {"BTC @250; x": "a", "e\u00e9": "b"}
    assert spread.parse_spread(spread.spread_text(owner)) == owner


# ---- plan time: chains across hosts ----------------------------------------------------------

HOST = Host(name="a", ssh="x", project_dir="/p", package="x",
            groups={"p1": GroupSpec("p1", 2, 1, 4)})


def book(extra: str) -> str:
    return ('name = "sw"\ngroup = "p1"\ncommand = "echo {x}"\nlabel = "sw:{x}"\n'
            f'{extra}\n[matrix]\nx = [1, 2, 3]\n')


AFTER = '[[after]]\nlabel = "sw:merge"\ncommand = "echo merge"\n'


def test_after_chain_refused_for_spread_unless_host_scoped() -> None:
    pb = parse_playbook(tomllib.loads(book("") + AFTER), "sw.toml")
    plans = {"a": plan_batch(pb, HOST)}
    with pytest.raises(ConfigError, match=r'after_scope = "host".*one host \(no --spread\) or '
                       "with the Slurm scheduler"):
        check_plans(pb, plans)
    scoped = parse_playbook(tomllib.loads(book('after_scope = "host"') + AFTER), "sw.toml")
    plan = plan_batch(scoped, HOST)
    assert check_plans(scoped, {"a": plan}) == [("sw:1", "p1"), ("sw:2", "p1"), ("sw:3", "p1")]
    share = share_plan(plan, {"sw:2"})
    assert [j.label for j in share.jobs] == ["sw:2"] and share.after  # its own chain
    assert share_plan(plan, set()).after == ()  # no share: no chain either


def test_after_phase_follows_the_same_rule_and_waits_only_on_the_hosts_share() -> None:
    text = ('name = "sw"\ngroup = "p1"\ncommand = "echo {phase} {x}"\n'
            'label = "sw:{phase}:{x}"\n'
            'SCOPE\n[matrix]\nx = [1, 2]\n'
            '[[phases]]\nname = "a"\n[[phases]]\nname = "b"\nafter_phase = "a"\n')
    pb = parse_playbook(tomllib.loads(text.replace("SCOPE", "")), "sw.toml")
    plans = {"a": plan_batch(pb, HOST)}
    with pytest.raises(ConfigError, match="after_phase"):
        check_plans(pb, plans)
    pb = parse_playbook(tomllib.loads(text.replace("SCOPE", 'after_scope = "host"')),
                        "sw.toml")
    plan = plan_batch(pb, HOST)
    share = share_plan(plan, {"sw:a:1", "sw:b:1", "sw:b:2"})
    assert {j.label: j.after for j in share.jobs} == {
        "sw:a:1": (), "sw:b:1": ("sw:a:1",), "sw:b:2": ("sw:a:1",)}


def test_after_scope_takes_host_or_fleet_only() -> None:
    with pytest.raises(ConfigError, match=r'after_scope must be "host".*got \'hosts\''):
        parse_playbook(tomllib.loads(book('after_scope = "hosts"')), "sw.toml")


def test_the_dry_table_shows_counts_per_host_and_why() -> None:
    from rich.console import Console

    from jobsafe_ops.batch.fleet import assignment_table

    rec = {"j00000": "c"}
    caps = {"p1": spread.capacity("a", "p1", parallel=2, max_parallel=4, job_memory=G,
                                  nproc=8, mem_available=3 * G, backlog=1)}
    a = spread.assign(labels(5), ["a", "b", "c"],
                      {"a": spread.HostView("a", {}, rec, caps), "b": view("b", 1)},
                      down={"c": "c: unreachable"})
    console = Console(width=200, record=True)
    console.print(assignment_table(a))
    text = console.export_text()
    row = {line.split("│")[1].strip(): line for line in text.splitlines() if "│" in line}
    assert "3.0G free / 1.0G per job = 3" in row["a"] and "1 already queued" in row["a"]
    assert "no new work (failing: c: unreachable)" in row["c"]
    assert [c.strip() for c in row["c"].split("│")[2:8]] == ["1", "0", "1", "0", "0", "1"]
    assert sum(int(row[h].split("│")[2]) for h in "abc") == 5


def test_a_chain_is_refused_before_any_ssh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """Through the command: hosts at a closed port, so any connection attempt would end
    as exit 4 rows, never as this ConfigError."""
    from jobsafe_ops import remote
    from jobsafe_ops.batch.submit import submit_batch_cmd

    monkeypatch.setattr(remote, "CONNECT_ATTEMPTS", 1)
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    for name in ("a", "b"):
        (hosts / f"{name}.toml").write_text(
            'ssh = "nobody@127.0.0.1:1"\nproject_dir = "~/p"\npackage = "x"\n'
            "[groups.p1]\nparallel = 1\nmin = 1\nmax = 2\n")
    chained = tmp_path / "sw.toml"
    chained.write_text(book("") + AFTER)
    args = {"host": "a,b", "dry": False, "allow_uncapped": False, "units": False,
            "unit_size": None, "inventory": str(hosts), "json_out": True, "spread": True}
    with pytest.raises(ConfigError, match="--spread with \\[\\[after\\]\\] steps"):
        submit_batch_cmd(playbook=str(chained), **args)
    plain = tmp_path / "plain.toml"
    plain.write_text(book(""))
    assert submit_batch_cmd(playbook=str(plain), **args) == 4  # control: it does connect
    assert "unreachable" in capsys.readouterr().out
