"""Property-based fuzzing of the campaign and sites loaders, and of what reaches a job's shell (#12).

Mutated copies of the shipped configs (a random value at a random key path, a key dropped or
added, random text pasted into the YAML, or a whole random file) must each either load or be
refused with one `ConfigError`: no other exception, no hang, a message of one bounded line; and
`drp-campaign validate` exits 2 with that one line on stderr. Names that load are shell words: the
RUN, the quantum-graph file and the job command BPS builds from them run nothing but the command.

Deterministic (derandomize) and a few seconds long: the many examples go through load_campaign,
only a handful through the CLI.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from drp_campaign import graph
from drp_campaign import settings as drp_settings

# Hypothesis keeps caches in its storage directory (./.hypothesis by default): under var/ instead.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(drp_settings.PROJECT_ROOT / "var" / "hypothesis"))
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from drp_campaign.bps import group_data_query, group_query, submit_config  # noqa: E402
from drp_campaign.config import ConfigError, load_campaign  # noqa: E402

CAMPAIGN = drp_settings.CAMPAIGNS_DIR / "test-3x3.yaml"
PIPELINE = drp_settings.CONFIGS_DIR / "pipelines" / "drp-mock.yaml"
SITES = drp_settings.DEFAULT_SITES_FILE
MAX_MESSAGE = 1200
HANG_S = 10  # far above one load (~20 ms): a hang fails the example instead of the whole run

FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=dt.timedelta(seconds=5),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# Values that mean something to a shell, a query, YAML, Python or a number parser.
HOSTILE = [
    "drp/x$(id>PWNED)",
    "`id`",
    "a'b",
    'a"b',
    "x\n",
    "x\r",
    "",
    " ",
    "../..",
    "a b",
    "*",
    "a;b",
    "USDF",
    "step1",
    "@once",
    "0 3 31 2 *",
    "61 * * * *",
    "x" * 5000,
    10**40,
    -(10**40),
    2**63,
    1e308,
    -1e308,
    float("inf"),
    float("nan"),
    -1,
    0,
    0.0,
    True,
    None,
    [],
    {},
]
SCALARS = st.one_of(
    st.sampled_from(HOSTILE),
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
YAML_TEXT = st.lists(
    st.sampled_from([*":{}[]&*!|>'\"%@`#,-? \n\t\\", "a", "1", "x: ", "&a ", "*a", "<<: ", "!!int "]), max_size=30
).map("".join)


def _shipped(name: str) -> dict[str, Any]:
    doc = yaml.safe_load((CAMPAIGN if name == "campaign" else SITES).read_text())
    if name == "campaign":
        doc["pipeline"] = str(PIPELINE)  # the copy is written elsewhere
    return doc


def _key_paths(doc: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every key path of a document, mappings and lists alike."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _key_paths(value, (*prefix, key))


PATHS = {name: list(_key_paths(_shipped(name))) for name in ("campaign", "sites")}


@st.composite
def mutated_configs(draw) -> dict[str, str]:
    """The campaign and sites files as text, one of them mutated."""
    target = draw(st.sampled_from(["campaign", "sites"]))
    docs = {name: _shipped(name) for name in ("campaign", "sites")}
    kind = draw(st.sampled_from(["replace", "replace", "drop", "add", "paste", "whole"]))
    if kind in ("replace", "drop", "add"):
        *parents, last = draw(st.sampled_from(PATHS[target]))
        parent = docs[target]
        for key in parents:
            parent = parent[key]
        if kind == "replace":
            parent[last] = draw(VALUES)
        elif kind == "drop":
            del parent[last]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=12) | st.sampled_from(HOSTILE[:12]))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
    texts = {name: yaml.safe_dump(doc, sort_keys=False, allow_unicode=True) for name, doc in docs.items()}
    if kind == "paste":
        at = draw(st.integers(0, len(texts[target])))
        texts[target] = texts[target][:at] + draw(YAML_TEXT) + texts[target][at:]
    elif kind == "whole":
        texts[target] = draw(st.text(max_size=200) | YAML_TEXT)
    return texts


@contextlib.contextmanager
def _no_hang(seconds: int) -> Iterator[None]:
    def hung(signum, frame):
        raise AssertionError(f"loading took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _write(directory: Path, texts: dict[str, str]) -> tuple[Path, Path]:
    paths = (directory / "campaign.yaml", directory / "sites.yaml")
    for path, name in zip(paths, ("campaign", "sites")):
        path.write_text(texts[name], encoding="utf-8")
    return paths


def _load(campaign: Path, sites: Path) -> ConfigError | None:
    """Load; None when accepted, the ConfigError when refused. Anything else fails the test."""
    try:
        with _no_hang(HANG_S):
            load_campaign(campaign, sites)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and "\r" not in message, message
        assert len(message) <= MAX_MESSAGE, message
        assert message.startswith(f"{exc.file}: {exc.key_path}: ") and exc.problem
        return exc
    return None


@settings(FUZZ, max_examples=300)
@given(mutated_configs())
def test_a_mutated_config_loads_or_is_refused_with_one_short_line(texts: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _load(*_write(Path(tmp), texts))


def _cli() -> list[str]:
    script = Path(sys.executable).with_name("drp-campaign")
    return [str(script)] if script.exists() else [sys.executable, "-m", "drp_campaign.cli"]


@settings(FUZZ, max_examples=5)
@given(mutated_configs())
def test_drp_campaign_validate_exits_2_with_one_line_on_stderr(texts: dict[str, str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        campaign, sites = _write(Path(tmp), texts)
        refused = _load(campaign, sites)
        result = subprocess.run(
            [*_cli(), "validate", str(campaign), "--sites", str(sites)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp,
        )
    if refused is None:
        assert (result.returncode, result.stderr) == (0, "") and result.stdout.startswith("OK ")
    else:
        assert (result.returncode, result.stdout) == (2, "")
        assert result.stderr == f"error: {refused}\n"


# --- what reaches a job's shell (#12 finding 2) -------------------------------------------------


def _bps_defaults() -> dict[str, Any]:
    """ctrl_bps's own templates (bps_defaults.yaml in the science-stack environment)."""
    found = sorted(drp_settings.stack_prefix().glob("lib/python3*/site-packages/lsst/ctrl/bps/etc/bps_defaults.yaml"))
    if not found:  # pragma: no cover - the environment is part of the project's setup
        pytest.skip(f"ctrl_bps not installed in {drp_settings.stack_prefix()}")
    return yaml.safe_load(found[0].read_text())


def _job_command(campaign, key: str, tmp: Path) -> tuple[str, list[str]]:
    """A quantum's job command as ctrl_bps builds it from our submit file, and the words it must
    be: the quantum-graph file is `{uniqProcName}.qg` in the submit directory, uniqProcName the
    RUN with '/' made '_' (ctrl_bps initialize), each `{name}` pasted as is, unquoted."""
    defaults = _bps_defaults()
    group = graph.WorkGroup("g000", (0,))
    config = submit_config(
        campaign, "USDF", "step1", group, key=key, pipeline_yaml=tmp / "p.yaml", submit_dir=tmp / "submit"
    )
    values = {
        **defaults,
        **config,
        **config["payload"],
        "extraRunQuantumOptions": "",
        "qgraphNodeId": "0b5a7e0e-0000-4000-8000-000000000000",
    }
    values["uniqProcName"] = values["outputRun"].replace("/", "_")
    values["qgraphFile"] = f"{values['submitPath']}/{values['qgraphFileTemplate'].format(**values)}"
    command = defaults["runQuantumCommand"]
    while "{" in command:  # nested templates ({runPreCmdOpts} -> {defaultPreCmdOpts})
        command = re.sub(r"\{(\w+)\}", lambda m: str(values.get(m.group(1), "")), command)
    words = ["run-qbb", values["butlerConfig"], values["fileDistributionEndPoint"] + values["qgraphFile"]]
    return command, words


def _run_in_bash(command: str, cwd: Path) -> list[str]:
    """Run the job command in bash, as the WMS does, with pipetask only printing its arguments."""
    script = 'pipetask() { printf "%s\\n" "$@"; }; ' + command
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, cwd=cwd, timeout=30, env={"PATH": os.environ["PATH"]}
    )
    return result.stdout.splitlines()


def test_a_hostile_prefix_refused_at_load_would_have_run_in_the_job_command(tmp_path: Path) -> None:
    """The hazard, shown: a RUN prefix with `$(...)` reaches the job command and runs there. Load
    refuses it, so the only way to the command is around the loader (model_copy)."""
    doc = _shipped("campaign")
    doc["output_prefix"] = "drp/x$(touch PWNED)"
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(doc))
    assert _load(tmp_path / "c.yaml", SITES) is not None
    hostile = load_campaign(CAMPAIGN).model_copy(update={"output_prefix": doc["output_prefix"]})
    command, _ = _job_command(hostile, "k", tmp_path)
    _run_in_bash(command, tmp_path)
    assert (tmp_path / "PWNED").exists(), "without the check, the prefix runs in the job's shell"
    quoted = load_campaign(CAMPAIGN).model_copy(
        update={"data": hostile.data.model_copy(update={"skymap": "x' OR skymap='y"})}
    )
    with pytest.raises(ValueError, match="refusing to write it into a data query"):
        group_data_query(quoted, (0,))
    query = group_query(quoted, (0,))  # what the stack side passes to the Butler: bound, not pasted
    assert "'" not in query["where"] and query["bind"] == {"skymap_name": "x' OR skymap='y", "tracts": [0]}


# Characters a shell, a Butler query or a path treats specially, and plain ones.
NAME_TEXT = st.text(alphabet=st.sampled_from(list("abz09-_./") + list("$()`;|&<>*?[]{}~#!'\" \n\\")), max_size=24)


@settings(FUZZ, max_examples=60)
@given(prefix=NAME_TEXT, skymap=NAME_TEXT, run_id=st.text(max_size=30))
def test_what_loads_reaches_the_job_shell_as_plain_words(prefix: str, skymap: str, run_id: str) -> None:
    doc = _shipped("campaign")
    doc["output_prefix"], doc["data"]["skymap"] = prefix, skymap
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "c.yaml").write_text(yaml.safe_dump(doc))
        if _load(tmp / "c.yaml", SITES) is not None:
            return
        campaign = load_campaign(tmp / "c.yaml")
        command, words = _job_command(campaign, graph.run_key(run_id), tmp)
        run = graph.output_run(campaign, graph.run_key(run_id), "USDF", "step1", "g000")
        for word in (run, *words):
            assert shlex.quote(word) == word, f"{word!r} is not a plain shell word"
        query = group_data_query(campaign, (0,))  # BPS writes it between double quotes
        assert not set(query) & set('"$`\\'), query
        before = set(tmp.iterdir())
        printed = _run_in_bash(command, tmp)
        assert printed == shlex.split(command)[1:] and printed[printed.index("run-qbb") :][:3] == words
        assert set(tmp.iterdir()) == before, "the job command made files"
