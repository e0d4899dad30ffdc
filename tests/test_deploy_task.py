"""Issue 13 acceptance, fast: every bad input or attack on a hospital-local deployment is
mounted against the real code path a user hits (``fedrx node run``, ``fedrx aggregator
serve``, ``fedrx task init``, ``fedrx certs init``, the node's own constructor) and must end as ONE
``fedrx: error: ...`` line with exit 2, before any training and with nothing half written.

* a node's own ``task.json`` that differs from the pinned one (hidden size, vocabulary, a
  hand edit) -> refused before the node reads its export, naming the first difference;
* a ``federation.json`` whose pinned task was edited after pinning -> node and aggregator
  refuse (one pinning no task: refused too); a node file that carries task settings (the old
  ``[task] data = ...`` table, shared keys in ``[node]``/``[data]``/``[privacy]``) -> refused;
* an aggregator config with a ``[task]``/``[data]`` table or a data key -> refused, and the
  config ``write_setup`` writes has no data path at all;
* a node DP policy beyond the task's ``max_epsilon`` (or DP off under a bound) -> refused
  naming the bound; a bound that bounds nothing (<= 0, NaN, inf, not a number) -> refused
  when the task is written or pinned;
* a hospital whose federation file pins ANOTHER task is refused by the aggregator at Hello
  (the Hello carries the pinned task's SHA-256).

The ``[data]`` errors and the no-data path are in ``tests/test_deploy_data.py``. No process
federation here (in-thread or config level; ``tests/test_deploy_formats.py`` runs the slow
ones).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from test_cli import assert_one_line_error, run

from fedrx.config import load_toml
from fedrx.errors import ProtocolError
from fedrx.nodes.config import AggregatorConfig, load_aggregator_config, load_node_config
from fedrx.nodes.launcher import DemoSpec, Setup, write_setup, write_toml
from fedrx.nodes.taskspec import TaskSpec, make_spec

QUICK = {"give_up_seconds": 5.0, "backoff_max": 0.5}
"""Node settings that keep a node that (wrongly) got past its checks from waiting long."""


def demo_spec(out: Path, **kw) -> DemoSpec:
    hs = ("h1", "h2")
    return DemoSpec(out=out, data="synthetic", hospitals=2, patients=120, protection="none",
                    hidden=16, rounds=1, node_extra={h: dict(QUICK) for h in hs}, **kw)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Setup:
    """A 2-hospital synthetic deployment (needs no shared data)."""
    return write_setup(demo_spec(tmp_path_factory.mktemp("deploy") / "fed"))


def node_toml(setup: Setup, h: str, dest: Path, *, node: dict | None = None,
              data: dict | None = None, privacy: dict | None = None,
              drop: tuple[str, ...] = ()) -> Path:
    """A copy of ``h``'s node config with [node]/[data]/[privacy] keys replaced (a value of
    None removes the key), tables in ``drop`` left out, ``out`` under ``dest``."""
    doc = load_toml(setup.node_configs[h])
    doc["node"]["out"] = str(dest / "node-out")
    for name, extra in (("node", node), ("data", data), ("privacy", privacy)):
        if extra:
            tab = doc.setdefault(name, {})
            tab.update(extra)
            for k in [k for k, v in tab.items() if v is None]:
                del tab[k]
    for name in drop:
        doc.pop(name, None)
    path = dest / f"{h}.toml"
    write_toml(path, doc)
    return path


def assert_refused(proc, fragment: str) -> None:
    assert_one_line_error(proc, fragment)
    assert proc.returncode == 2, proc.stderr


def assert_nothing_written(dest: Path) -> None:
    """No file in the node's out folder (the node may create the empty folder up front, to
    prove it is writable before reading any data)."""
    out = dest / "node-out"
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]


def pinned_json(setup: Setup) -> dict:
    return json.loads((setup.out / "certs" / "task.json").read_text())


# ------------------------------------------------------------------ 1. own task.json


def _hidden_32(t: dict) -> None:
    t["settings"]["hidden"] = 32


def _one_label_fewer(t: dict) -> None:
    t["vocabulary"]["labels"].pop()


def _one_label_replaced(t: dict) -> None:
    t["vocabulary"]["labels"][0] = "Z99Z"


def _public_to_exact(t: dict) -> None:
    t["encoding"] = "exact-codes/1"


def _lr_by_hand(t: dict) -> None:
    t["settings"]["lr"] = t["settings"]["lr"] * 10


def _looser_dp_bound(t: dict) -> None:
    t["dp_bounds"]["max_epsilon"] = 100.0


@pytest.mark.parametrize("edit, fragment", [
    (_hidden_32, "settings hidden: 32 here, 16 pinned"),
    (_one_label_fewer, "vocabulary labels: "),
    (_one_label_replaced, "1 not pinned, e.g. 'Z99Z'"),
    (_public_to_exact, "encoding: 'exact-codes/1' here, 'public-categories/1' pinned"),
    (_lr_by_hand, "settings lr: "),
    (_looser_dp_bound, "dp_bounds max_epsilon: 100.0 here, None pinned"),
])
def test_node_refuses_own_task_that_differs_before_training(setup, tmp_path, edit, fragment):
    """The hospital's own copy of the task (``[node] task``) must be the pinned one; the
    refusal comes before the node reads its export (no "own export read" log line: stderr
    holds the one error line only) and names the difference."""
    mine = pinned_json(setup)
    edit(mine)
    (tmp_path / "task.json").write_text(json.dumps(mine, indent=1))
    cfg = node_toml(setup, "h1", tmp_path, node={"task": str(tmp_path / "task.json")})
    proc = run("node", "run", "--config", str(cfg))
    assert_refused(proc, "this hospital's task spec differs from the one pinned")
    assert fragment in proc.stderr, proc.stderr
    assert_nothing_written(tmp_path)


def test_node_names_the_vocabulary_code_that_differs(setup, tmp_path):
    mine = pinned_json(setup)
    dropped = mine["vocabulary"]["labels"].pop(3)
    (tmp_path / "task.json").write_text(json.dumps(mine))
    cfg = node_toml(setup, "h1", tmp_path, node={"task": str(tmp_path / "task.json")})
    n = len(mine["vocabulary"]["labels"])
    assert_refused(run("node", "run", "--config", str(cfg)),
                   f"vocabulary labels: {n} codes here, {n + 1} pinned (1 pinned missing "
                   f"here, e.g. {dropped!r})")


@pytest.mark.parametrize("text, fragment", [
    ("{not json", "is not JSON"),
    (None, "settings must hold exactly"),          # a setting deleted by hand
    ("[]", "not a fedrx-task/1 task specification"),
])
def test_node_refuses_a_broken_task_file(setup, tmp_path, text, fragment):
    if text is None:
        t = pinned_json(setup)
        del t["settings"]["hidden"]
        text = json.dumps(t)
    (tmp_path / "task.json").write_text(text)
    cfg = node_toml(setup, "h1", tmp_path, node={"task": str(tmp_path / "task.json")})
    assert_refused(run("node", "run", "--config", str(cfg)), fragment)
    assert_nothing_written(tmp_path)


def test_node_with_the_pinned_task_gets_past_the_check(setup, tmp_path):
    """Control: the same config with the pinned task.json passes every check and builds its
    party from its own export (in-process load path)."""
    from fedrx.nodes.hospital import HospitalNode

    cfg, data, privacy = load_node_config(node_toml(setup, "h1", tmp_path))
    node = HospitalNode(cfg, data, privacy)
    party = node.build_party()
    assert party is not None and data.path == str(setup.out / "exports" / "h1")


# ------------------------------------------------------- 2. pinned task edited


def _edited_federation(setup: Setup, dest: Path, edit) -> Path:
    fed = json.loads((setup.out / "certs" / "federation.json").read_text())
    edit(fed)
    p = dest / "federation.json"
    p.write_text(json.dumps(fed, indent=1))
    return p


@pytest.mark.parametrize("what", ["vocabulary", "settings", "digest"])
def test_pinned_task_edited_after_pinning_is_refused_by_node_and_aggregator(setup, tmp_path,
                                                                          what):
    def edit(fed: dict) -> None:
        if what == "vocabulary":
            fed["task"]["vocabulary"]["diagnoses"][0] = "999"
        elif what == "settings":
            fed["task"]["settings"]["rounds"] = 50
        else:
            fed["task_sha256"] = "0" * 64

    fed = _edited_federation(setup, tmp_path, edit)
    cfg = node_toml(setup, "h1", tmp_path, node={"federation": str(fed), "task": None})
    assert_refused(run("node", "run", "--config", str(cfg)), "edited after pinning")
    assert_nothing_written(tmp_path)
    agg = load_toml(setup.aggregator_config)
    agg["aggregator"].update(federation=str(fed), out=str(tmp_path / "agg-out"),
                             address_file=str(tmp_path / "agg.addr"))
    write_toml(tmp_path / "aggregator.toml", agg)
    assert_refused(run("aggregator", "serve", "--config", str(tmp_path / "aggregator.toml")),
                   "edited after pinning")
    assert not (tmp_path / "agg-out").exists() and not (tmp_path / "agg.addr").exists()


def test_federation_file_pinning_no_task_is_refused(setup, tmp_path):
    def edit(fed: dict) -> None:
        del fed["task"], fed["task_sha256"]

    fed = _edited_federation(setup, tmp_path, edit)
    cfg = node_toml(setup, "h1", tmp_path, node={"federation": str(fed), "task": None})
    assert_refused(run("node", "run", "--config", str(cfg)), "pins no task spec")


@pytest.mark.parametrize("table, extra, fragment", [
    # the pre-issue-13 node file: the task and the WHOLE dataset named in [task]
    ("task", {"data": "mimic3-demo", "hospitals": 3}, "no [task] table here"),
    # a hospital trying to change a shared setting from its own file
    ("privacy", {"hidden": 128}, "unknown [privacy] key(s) hidden"),
    ("node", {"rounds": 99}, "unknown config key 'rounds'"),
    ("data", {"hospitals": 3}, "unknown config key 'hospitals'"),
])
def test_node_file_cannot_carry_task_settings(setup, tmp_path, table, extra, fragment):
    doc = load_toml(setup.node_configs["h1"])
    doc["node"]["out"] = str(tmp_path / "node-out")
    doc.setdefault(table, {}).update(extra)
    write_toml(tmp_path / "h.toml", doc)
    assert_refused(run("node", "run", "--config", str(tmp_path / "h.toml")), fragment)
    assert_nothing_written(tmp_path)


# ---------------------------------------------------------- 3. aggregator: no data


def test_aggregator_config_written_by_the_demo_has_no_data(setup):
    doc = load_toml(setup.aggregator_config)
    assert set(doc) == {"aggregator"}
    exports = str(setup.out / "exports")
    assert not [(k, v) for k, v in doc["aggregator"].items() if exports in str(v)]
    cfg = load_aggregator_config(setup.aggregator_config)
    fields = set(vars(cfg))
    assert not fields & {"data", "path", "mappings", "hospitals", "vocabulary", "site"}
    assert fields == set(AggregatorConfig.__dataclass_fields__)


@pytest.mark.parametrize("extra, fragment", [
    ('\n[task]\ndata = "mimic3-demo"\nhospitals = 3\n', "no [task] table here"),
    ('\n[data]\npath = "exports/h1"\n', "no [data] table here"),
    ('\n[privacy]\ndp = true\n', "no [privacy] table here"),
])
def test_aggregator_config_with_a_task_or_data_table_is_refused(setup, tmp_path, extra,
                                                                fragment):
    p = tmp_path / "aggregator.toml"
    p.write_text(setup.aggregator_config.read_text() + extra)
    proc = run("aggregator", "serve", "--config", str(p))
    assert_refused(proc, fragment)
    assert "patient data stays at the hospitals" in proc.stderr


def test_aggregator_config_with_a_data_key_is_refused(setup, tmp_path):
    p = tmp_path / "aggregator.toml"
    p.write_text(setup.aggregator_config.read_text().replace(
        "[aggregator]\n", '[aggregator]\ndata = "mimic3-demo"\n'))
    assert_refused(run("aggregator", "serve", "--config", str(p)),
                   "unknown config key 'data'")


# ------------------------------------------------------------------- 5. DP bounds


def test_node_dp_policy_beyond_the_task_bound_is_refused(setup, tmp_path):
    """``fedrx task init --max-epsilon 4`` + ``fedrx certs init --task``: a node whose own
    ``[privacy]`` asks for epsilon 8 is refused naming the bound; epsilon 4 passes."""
    task = tmp_path / "task.json"
    proc = run("task", "init", "--out", str(task), "--hidden", "16", "--rounds", "1",
               "--protection", "none", "--max-epsilon", "4")
    assert proc.returncode == 0, proc.stderr
    assert TaskSpec.load(task).dp_bounds == {"max_epsilon": 4.0}
    certs = tmp_path / "certs"
    proc = run("certs", "init", "--out", str(certs), "--hospitals", "h1,h2",
               "--task", str(task))
    assert proc.returncode == 0, proc.stderr
    d = certs / "hospitals" / "h1"
    node = {"federation": str(certs / "federation.json"), "ca": str(certs / "ca.pem"),
            "cert": str(d / "tls.pem"), "key": str(d / "tls.key"),
            "identity": str(d / "identity.json"), "task": str(certs / "task.json")}
    cfg = node_toml(setup, "h1", tmp_path, node=node, privacy={"dp": True, "epsilon": 8.0})
    assert_refused(run("node", "run", "--config", str(cfg)),
                   "[privacy] epsilon 8 exceeds the federation's bound max_epsilon 4")
    assert_nothing_written(tmp_path)
    from fedrx.nodes.hospital import HospitalNode

    off = node_toml(setup, "h1", tmp_path, node=node, privacy={"dp": False})
    assert_refused(run("node", "run", "--config", str(off)),
                   "[privacy] dp is off, but the federation's task bounds every hospital's "
                   "epsilon at max_epsilon 4")
    ok = node_toml(setup, "h1", tmp_path, node=node, privacy={"dp": True, "epsilon": 4.0})
    HospitalNode(*load_node_config(ok))  # within the bound: accepted


@pytest.mark.parametrize("bound", ["-1", "0", "nan", "inf"])
def test_task_init_refuses_a_bound_that_bounds_nothing(tmp_path, bound):
    task = tmp_path / "task.json"
    assert_refused(run("task", "init", "--out", str(task), "--max-epsilon", bound),
                   "dp_bounds max_epsilon must be a number > 0")
    assert not task.exists()


@pytest.mark.parametrize("bound", ["4", True, -2])
def test_certs_init_refuses_a_hand_edited_bound(setup, tmp_path, bound):
    """A task.json whose max_epsilon was edited into a non-number is refused when pinned
    (before it crashed every node with a TypeError), and nothing is written."""
    t = pinned_json(setup)
    t["dp_bounds"]["max_epsilon"] = bound
    (tmp_path / "task.json").write_text(json.dumps(t))
    certs = tmp_path / "certs"
    assert_refused(run("certs", "init", "--out", str(certs), "--hospitals", "h1",
                       "--task", str(tmp_path / "task.json")),
                   "dp_bounds max_epsilon must be a number > 0")
    assert not certs.exists()


# ------------------------------------------------- 7. another task at Hello


def test_hospital_pinning_another_task_is_refused_at_hello(setup, tmp_path):
    """The aggregator serves the pinned task; a hospital whose federation file was made for
    another task (hidden 32; internally consistent, so the hospital itself sees nothing
    wrong) sends that task's SHA-256 in its Hello and is refused (FAILED_PRECONDITION: the
    node stops with one error, it does not retry). Control: the pinned file connects."""
    from fedrx.nodes.aggregator import AggregatorNode
    from fedrx.nodes.hospital import HospitalNode

    agg_doc = load_toml(setup.aggregator_config)
    addr = tmp_path / "agg.addr"
    agg_doc["aggregator"].update(out=str(tmp_path / "agg-out"), address_file=str(addr),
                                 wait_seconds=60.0)
    write_toml(tmp_path / "aggregator.toml", agg_doc)
    agg = AggregatorNode(load_aggregator_config(tmp_path / "aggregator.toml"))
    other = make_spec({**pinned_json(setup)["settings"], "hidden": 32})

    def edit(fed: dict) -> None:
        fed["task"], fed["task_sha256"] = other.to_json(), other.sha256

    fed = _edited_federation(setup, tmp_path, edit)
    done: dict = {}
    t = threading.Thread(target=lambda: done.update(doc=agg.run()), daemon=True)
    t.start()
    try:
        end = time.monotonic() + 60
        while not (addr.exists() and addr.read_text().strip()):
            assert time.monotonic() < end and t.is_alive()
            time.sleep(0.05)
        bad = node_toml(setup, "h1", tmp_path, node={
            "federation": str(fed), "task": None, "aggregator_file": str(addr),
            "give_up_seconds": 30.0})
        node = HospitalNode(*load_node_config(bad))
        assert node.spec.sha256 == other.sha256 != agg.spec.sha256
        with pytest.raises(ProtocolError, match="task configuration differs") as ei:
            node.run()
        assert "FAILED_PRECONDITION" in str(ei.value)
        assert "h1" not in agg.registry.connected()
        # the same through `fedrx node run` (its log lines come first, the error last)
        proc = run("node", "run", "--config", str(bad))
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("fedrx: error: aggregator refused h1: task configuration "
                               "differs from the aggregator's"), last
        # control: the same hospital with the pinned federation file gets a session
        good = node_toml(setup, "h1", tmp_path / "good", node={
            "aggregator_file": str(addr), "give_up_seconds": 30.0})
        node = HospitalNode(*load_node_config(good))
        nt = threading.Thread(target=node.run, daemon=True)
        nt.start()
        end = time.monotonic() + 60
        while "h1" not in agg.registry.connected():
            assert time.monotonic() < end and nt.is_alive()
            time.sleep(0.05)
        node.stop.set()
        nt.join(15)
    finally:
        agg.stop.set()
        t.join(30)
    assert not t.is_alive()

