"""Checks across keys and files, on the already-typed sites, pipeline and campaign.

Unknown sites and steps, `after` references and cycles, what a hop may move, what the
site-independence QA compares, requests that do not fit a site: checked in file order, each raising
a `ConfigError` for the first problem found.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from .errors import ConfigError, clip, name_list
from .models import BpsRequest, CampaignDocument, PipelineSpec, SitesConfig
from .names import IDENTIFIER, IN_GRAPHS, IN_TASK_IDS, NODE_NAME

WORK_SHARE_TOLERANCE = 1e-6
# Airflow's [core] max_map_length: a mapped task given more entries fails when it expands, at run
# time. Each step at a site maps over the site's groups, so a campaign must keep within it.
DEFAULT_MAX_MAP_LENGTH = 1024
MAX_MAP_LENGTH_ENV = "AIRFLOW__CORE__MAX_MAP_LENGTH"


def max_map_length() -> int:
    """Airflow's max_map_length as this deployment sets it ($AIRFLOW__CORE__MAX_MAP_LENGTH, as
    scripts/env.sh and docker-compose.yml set Airflow's options), else Airflow's default."""
    value = os.environ.get(MAX_MAP_LENGTH_ENV, "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else DEFAULT_MAX_MAP_LENGTH


def check_sites(sites: SitesConfig) -> None:
    file = sites.file
    for name in sites.sites:
        if not NODE_NAME.accepts(name):
            raise ConfigError(file, f"sites.{name}", "site name " + NODE_NAME.problem(name, IN_TASK_IDS))
        panda = sites.sites[name].panda
        if panda.compute_site not in panda.queues:
            # BPS's computeSite is a PanDA queue name: one the site does not have would be
            # refused by PanDA only after the workflow was built and uploaded.
            raise ConfigError(
                file,
                f"sites.{name}.panda.compute_site",
                f"unknown computeSite "
                f"{clip(panda.compute_site)}: not one of {name}'s PanDA queues "
                f"({name_list(panda.queues)}); use one of them or add the queue",
            )
    queue_of: dict[str, str] = {}
    for name, site in sites.sites.items():
        # Each site's worker consumes its queue only: a shared queue would run one site's tasks on
        # the other's worker, next to the wrong Butler and storage.
        if (other := queue_of.setdefault(site.airflow_queue, name)) != name:
            raise ConfigError(
                file,
                f"sites.{name}.airflow_queue",
                f"queue {clip(site.airflow_queue)} is {other}'s too; give each site a queue of its own",
            )
    if sites.hub not in sites.sites:
        raise ConfigError(
            file,
            "hub",
            f"hub {clip(sites.hub)} is not one of the sites ({name_list(sites.sites)}); set hub to one of them",
        )
    total = math.fsum(site.work_share for site in sites.sites.values())
    if abs(total - 1.0) > WORK_SHARE_TOLERANCE:
        raise ConfigError(
            file, "sites.*.work_share", f"work shares sum to {total:.6g}, not 1; adjust them so that they sum to 1"
        )


def check_pipeline(spec: PipelineSpec) -> None:
    file = spec.file
    for name in spec.dataset_types:
        if not IDENTIFIER.accepts(name):
            raise ConfigError(file, f"dataset_types.{name}", "dataset type " + IDENTIFIER.problem(name, IN_GRAPHS))
    _check_numbers(spec)
    producer: dict[str, str] = {}
    for label, task in spec.tasks.items():
        if not IDENTIFIER.accepts(label):
            raise ConfigError(file, f"tasks.{label}", "task label " + IDENTIFIER.problem(label, IN_GRAPHS))
        if not NODE_NAME.accepts(task.step):
            raise ConfigError(file, f"tasks.{label}.step", "step name " + NODE_NAME.problem(task.step, IN_TASK_IDS))
        for key in ("inputs", "prerequisites", "outputs"):
            for i, name in enumerate(getattr(task, key)):
                if name not in spec.dataset_types:
                    raise ConfigError(
                        file,
                        f"tasks.{label}.{key}[{i}]",
                        f"dataset type {clip(name)} is not declared; add it under dataset_types or fix the name",
                    )
        for i, name in enumerate(task.outputs):
            if name in producer:
                raise ConfigError(
                    file,
                    f"tasks.{label}.outputs[{i}]",
                    f"dataset type {clip(name)} is "
                    f"already an output of task {clip(producer[name])}; each dataset "
                    "type has one producing task",
                )
            producer[name] = label
    _check_real_tasks(spec, producer)


# What a dataset type's numbers are called, by storage class: what the site-independence QA compares.
NUMBERS_OF = {"ArrowAstropy": "columns", "StructuredDataDict": "metrics"}
ROWS = "rows"  # a table's row count, compared as a quantity of its own


def _check_numbers(spec: PipelineSpec) -> None:
    """Columns belong to a table, metrics to a dict; each named once, `rows` left to the row count."""
    file = spec.file
    for name, dataset_type in spec.dataset_types.items():
        where = f"dataset_types.{name}"
        if dataset_type.columns and dataset_type.metrics:
            raise ConfigError(
                file, where, "declares both columns and metrics; a dataset type is a table or a dict: remove one"
            )
        for wanted, key in NUMBERS_OF.items():
            numbers = getattr(dataset_type, key)
            if numbers and dataset_type.storage_class != wanted:
                raise ConfigError(
                    file,
                    f"{where}.{key}",
                    f"{key} are {wanted}'s, but {name} has storage_class "
                    f"{dataset_type.storage_class or '(unset)'}; set storage_class: {wanted} or remove {key}",
                )
            for i, number in enumerate(numbers):
                if number in numbers[:i]:
                    raise ConfigError(file, f"{where}.{key}[{i}]", f"{number} is listed twice; name each once")
                if number == ROWS:
                    raise ConfigError(
                        file,
                        f"{where}.{key}[{i}]",
                        f"'{ROWS}' names a table's row count in a campaign's qa.compare; rename the {key[:-1]}",
                    )


def _check_real_tasks(spec: PipelineSpec, producer: dict[str, str]) -> None:
    """Numbers to compare come from tasks of ours: a mock task writes no columns or metrics, and a
    real task's outputs say the storage class it writes."""
    file = spec.file
    for name, dataset_type in spec.dataset_types.items():
        key = "columns" if dataset_type.columns else "metrics" if dataset_type.metrics else None
        if key is None:
            continue
        label = producer.get(name)
        if label is None:
            raise ConfigError(
                file,
                f"dataset_types.{name}.{key}",
                f"no task makes {name}, so it has no {key} to compare; remove {key} or add the task making it",
            )
        if spec.tasks[label].task_class is None:
            raise ConfigError(
                file,
                f"dataset_types.{name}.{key}",
                f"{name} is made by {label}, a mock task (no task_class) that writes no {key}; "
                f"set tasks.{label}.task_class to a task of ours or remove {key}",
            )
    for label, task in spec.tasks.items():
        if task.task_class is None:
            continue
        for i, name in enumerate(task.outputs):
            if spec.dataset_types[name].storage_class is None:
                raise ConfigError(
                    file,
                    f"tasks.{label}.outputs[{i}]",
                    f"{label} is a task of ours (task_class), so what it writes must be declared: set "
                    f"dataset_types.{name}.storage_class ({' or '.join(NUMBERS_OF)})",
                )


def check_campaign(doc: CampaignDocument, file: Path, pipeline: PipelineSpec, sites: SitesConfig) -> None:
    """Cross-checks of a structurally valid campaign, in file order; raises on the first."""
    if doc.data.instrument != pipeline.instrument:
        raise ConfigError(
            file,
            "data.instrument",
            f"instrument {clip(doc.data.instrument)} differs "
            f"from the pipeline's ({clip(pipeline.instrument)} in {pipeline.file}); use "
            "the pipeline's instrument or another pipeline",
        )
    _check_tracts(doc, file, sites)
    _check_steps(doc, file, pipeline, sites)
    _check_placement(doc, file, pipeline)
    _check_graph(doc, file)
    _check_hop_dataset_types(doc, file, pipeline)
    _check_archive_hops(doc, file, sites)
    _check_overlap(doc, file)
    _check_group_counts(doc, file)
    _check_compare(doc, file, pipeline)
    _check_bps_requests(doc, file, sites, pipeline)
    steps = list(doc.steps)
    for i, gate in enumerate(doc.review_gates):
        if gate not in doc.steps:
            raise ConfigError(
                file,
                f"review_gates[{i}]",
                f"{clip(gate)} is not a step of this campaign; use one of: {name_list(steps)}",
            )


def _check_tracts(doc: CampaignDocument, file: Path, sites: SitesConfig) -> None:
    owner: dict[int, str] = {}
    for site, tracts in doc.tracts.items():
        if site not in sites.sites:
            raise ConfigError(
                file,
                f"tracts.{site}",
                f"unknown site {clip(site)}; use one of the "
                f"sites in {sites.file} ({name_list(sites.sites)}) or add it there",
            )
        if not tracts:
            raise ConfigError(
                file, f"tracts.{site}", f"no tracts assigned to {site}; list at least one tract or remove the site"
            )
        for i, tract in enumerate(tracts):
            if tract < 0:
                raise ConfigError(file, f"tracts.{site}[{i}]", f"tract {tract} is negative; tract ids are >= 0")
            if tract in owner:
                other = owner[tract]
                where = f"listed twice for {site}" if other == site else f"assigned to two sites, {other} and {site}"
                raise ConfigError(
                    file,
                    f"tracts.{site}[{i}]",
                    f"tract {tract} is {where}; assign each tract to exactly one site, once",
                )
            owner[tract] = site


def _check_steps(doc: CampaignDocument, file: Path, pipeline: PipelineSpec, sites: SitesConfig) -> None:
    for kind, entries in (("steps", doc.steps), ("hops", doc.hops)):
        for name in entries:
            if not NODE_NAME.accepts(name):
                raise ConfigError(file, f"{kind}.{name}", "name " + NODE_NAME.problem(name, IN_TASK_IDS))
    for name in doc.hops:
        if name in doc.steps:
            raise ConfigError(
                file,
                f"hops.{name}",
                f"{clip(name)} is both a step and a hop, so `after` entries naming it are ambiguous; rename the hop",
            )
    pipeline_steps = pipeline.steps()
    for name in doc.steps:
        if name not in pipeline_steps:
            raise ConfigError(
                file,
                f"steps.{name}",
                f"step {clip(name)} is not a step of the pipeline "
                f"{pipeline.file} (its steps: {name_list(pipeline_steps)}); rename or "
                "remove it",
            )
    for name in pipeline_steps:
        if name not in doc.steps:
            raise ConfigError(
                file,
                "steps",
                f"pipeline step {clip(name)} (from {pipeline.file}) is "
                f"missing; add steps.{name} with its scope and after",
            )
    for name, step in doc.steps.items():
        where = f"steps.{name}.site"
        if step.site is not None and step.site not in sites.sites:
            raise ConfigError(
                file,
                where,
                f"unknown site {clip(step.site)}; use one of the sites in {sites.file} ({name_list(sites.sites)})",
            )
        if step.scope == "site" and step.site is not None:
            raise ConfigError(
                file,
                where,
                "a site-scope step runs at every campaign site, so it "
                "takes no site; remove site (or make the step scope: global)",
            )
        if step.scope == "global" and step.site not in (None, sites.hub):
            raise ConfigError(
                file,
                where,
                f"global steps run at the hub {sites.hub}, not {step.site}; set site: {sites.hub} or leave it out",
            )
    nodes = [*doc.steps, *doc.hops]
    for kind, entries in (("steps", doc.steps), ("hops", doc.hops)):
        for name, entry in entries.items():
            for i, before in enumerate(entry.after):
                if before not in doc.steps and before not in doc.hops:
                    raise ConfigError(
                        file,
                        f"{kind}.{name}.after[{i}]",
                        f"{clip(before)} is not a step or hop of this campaign; use one of: {name_list(nodes)}",
                    )


def _dependencies(doc: CampaignDocument) -> dict[str, list[str]]:
    """Each step and hop with the steps and hops it runs after."""
    steps = {name: step.after for name, step in doc.steps.items()}
    return {**steps, **{name: hop.after for name, hop in doc.hops.items()}}


def _check_graph(doc: CampaignDocument, file: Path) -> None:
    """Refuse a dependency cycle, naming it (depth-first search in file order)."""
    deps = _dependencies(doc)
    done: set[str] = set()
    for start in deps:
        if start in done:
            continue
        path: list[str] = [start]
        on_path = {start}
        iters = [iter(enumerate(deps[start]))]
        while iters:
            edge = next(iters[-1], None)
            if edge is None:
                node = path.pop()
                on_path.discard(node)
                done.add(node)
                iters.pop()
                continue
            i, before = edge
            if before in on_path:
                cycle = path[path.index(before) :] + [before]
                node = path[-1]
                kind = "steps" if node in doc.steps else "hops"
                raise ConfigError(
                    file,
                    f"{kind}.{node}.after[{i}]",
                    "dependency cycle: "
                    f"{' -> '.join(cycle)} (a -> b: a runs after b); remove one of "
                    "these after entries",
                )
            if before in done:
                continue
            path.append(before)
            on_path.add(before)
            iters.append(iter(enumerate(deps[before])))


def ancestors_of(doc: CampaignDocument) -> dict[str, set[str]]:
    """Every step and hop that must finish before each node (the graph is acyclic here).

    Iterative, children before parents: a long chain of `after` must not exhaust the stack."""
    deps = _dependencies(doc)
    memo: dict[str, set[str]] = {}
    for start in deps:
        stack = [start]
        while stack:
            node = stack[-1]
            if node in memo:
                stack.pop()
                continue
            pending = [before for before in deps[node] if before not in memo]
            if pending:
                stack.extend(pending)
                continue
            memo[node] = set(deps[node]).union(*(memo[before] for before in deps[node]))
            stack.pop()
    return memo


def _check_placement(doc: CampaignDocument, file: Path, pipeline: PipelineSpec) -> None:
    """A place hop runs first and selects inputs the hub holds; every other hop runs after
    something and moves what steps made."""
    places = [name for name, hop in doc.hops.items() if hop.direction == "place"]
    if len(places) > 1:
        raise ConfigError(
            file,
            f"hops.{places[1]}.direction",
            f"a campaign places its inputs once, "
            f"but {name_list(places)} are all place hops; merge their inputs into one",
        )
    for name, hop in doc.hops.items():
        if hop.direction != "place":
            if hop.inputs:
                raise ConfigError(
                    file,
                    f"hops.{name}.inputs",
                    "only a place hop selects inputs; remove the key or make the hop direction: place",
                )
            for key in ("after", "dataset_types"):
                if not getattr(hop, key):
                    raise ConfigError(
                        file,
                        f"hops.{name}.{key}",
                        f"a {hop.direction} hop needs at "
                        f"least one entry in {key}; list what it "
                        f"{'runs after' if key == 'after' else 'moves'}",
                    )
            continue
        if hop.after:
            raise ConfigError(
                file,
                f"hops.{name}.after",
                "a place hop runs before anything else at the sites (their first steps wait for it); remove after",
            )
        if hop.dataset_types:
            raise ConfigError(
                file,
                f"hops.{name}.dataset_types",
                "a place hop moves the dataset types of its inputs; remove dataset_types",
            )
        if not hop.inputs:
            raise ConfigError(
                file,
                f"hops.{name}.inputs",
                "a place hop needs inputs: dataset type "
                "-> {collection, select}; add e.g. raw: {collection: ..., select: "
                "visits_in_tracts}",
            )
        for dataset_type, sel in hop.inputs.items():
            where = f"hops.{name}.inputs.{dataset_type}"
            spec = pipeline.dataset_types.get(dataset_type)
            if spec is None:
                raise ConfigError(
                    file,
                    where,
                    f"{clip(dataset_type)} is not a dataset type of the "
                    f"pipeline {pipeline.file}; declare it there or fix the name",
                )
            if sel.collection not in doc.data.input_collections:
                raise ConfigError(
                    file,
                    f"{where}.collection",
                    f"{clip(sel.collection)} is not one of "
                    f"data.input_collections ({name_list(doc.data.input_collections)}); "
                    "the sites' steps read only those: add it there",
                )
            wanted = {
                "visits_in_tracts": (
                    "visit" in spec.dimensions and "detector" in spec.dimensions,
                    "visit and detector dimensions",
                ),
                "valid_for_visits": (spec.calibration, "calibration: true in the pipeline's dataset_types"),
                "overlaps_tracts": (
                    any(d.startswith(("htm", "healpix")) for d in spec.dimensions),
                    "a sky-pixel dimension such as htm7",
                ),
            }
            ok, needs = wanted[sel.select]
            if not ok:
                raise ConfigError(
                    file,
                    f"{where}.select",
                    f"select {sel.select} needs a dataset "
                    f"type with {needs}; {dataset_type} has dimensions "
                    f"{spec.dimensions}: pick another select",
                )


def _check_hop_dataset_types(doc: CampaignDocument, file: Path, pipeline: PipelineSpec) -> None:
    ancestors = ancestors_of(doc)
    for name, hop in doc.hops.items():
        if hop.direction == "place":  # inputs, not products: checked by _check_placement
            continue
        earlier = [step for step in doc.steps if step in ancestors[name]]
        produced = {dt for step in earlier for dt in pipeline.step_outputs(step)}
        for i, dataset_type in enumerate(hop.dataset_types):
            where = f"hops.{name}.dataset_types[{i}]"
            if dataset_type not in pipeline.dataset_types:
                raise ConfigError(
                    file,
                    where,
                    f"hop {name} moves {clip(dataset_type)}, which the "
                    f"pipeline {pipeline.file} does not define; fix the name",
                )
            if dataset_type not in produced:
                source = next((s for s in pipeline.steps() if dataset_type in pipeline.step_outputs(s)), None)
                origin = f"it is made by {source}" if source else "no step makes it"
                raise ConfigError(
                    file,
                    where,
                    f"hop {name} moves {clip(dataset_type)}, which no "
                    f"earlier step produces ({origin}; steps before the hop: "
                    f"{name_list(earlier)}); add the producing step to the hop's "
                    "after chain or remove the dataset type",
                )


def _check_archive_hops(doc: CampaignDocument, file: Path, sites: SitesConfig) -> None:
    """A tape hop needs the hub's tape RSE; a release names earlier site hops whose data it
    archives; the IDACs it sends products to are those of the sites file."""
    ancestors = ancestors_of(doc)
    for name, hop in doc.hops.items():
        if hop.direction == "to_tape" and not sites.sites[sites.hub].rucio.tape_rse:
            raise ConfigError(
                file,
                f"hops.{name}.direction",
                f"hop {name} goes to tape, but the hub "
                f"{sites.hub} has no rucio.tape_rse in {sites.file}; add it there or "
                "remove the hop",
            )
        if hop.release_grace_minutes and hop.direction != "to_tape":
            raise ConfigError(
                file,
                f"hops.{name}.release_grace_minutes",
                "only a to_tape hop releases site copies; move the key to the campaign's to_tape hop",
            )
        if hop.release_site_copies_of and hop.direction != "to_tape":
            raise ConfigError(
                file,
                f"hops.{name}.release_site_copies_of",
                "only a to_tape hop "
                "releases site copies (they are released once safe on tape); move "
                "the list to the campaign's to_tape hop",
            )
        if hop.idacs and hop.direction != "to_tape":
            raise ConfigError(
                file,
                f"hops.{name}.idacs",
                "only a to_tape hop sends products to "
                "IDACs (they go once safe on tape); move the list to the campaign's "
                "to_tape hop",
            )
        for i, idac in enumerate(hop.idacs):
            where = f"hops.{name}.idacs[{i}]"
            if idac not in sites.idacs:
                raise ConfigError(
                    file,
                    where,
                    f"unknown IDAC {clip(idac)}; use one of the IDACs in "
                    f"{sites.file} ({name_list(sites.idacs)}) or add it there under "
                    "idacs",
                )
            if idac in hop.idacs[:i]:
                raise ConfigError(file, where, f"IDAC {idac} is listed twice; name each IDAC once")
        for i, other in enumerate(hop.release_site_copies_of):
            where = f"hops.{name}.release_site_copies_of[{i}]"
            site_hops = [n for n, h in doc.hops.items() if h.direction != "to_tape"]
            if other not in site_hops:
                raise ConfigError(
                    file,
                    where,
                    f"{clip(other)} is not a fan_in or fan_out hop of this "
                    f"campaign; use one of: {name_list(site_hops)}",
                )
            if other not in ancestors[name]:
                raise ConfigError(
                    file,
                    where,
                    f"hop {other} does not run before {name}, so its "
                    f"site copies could be released before they reach tape; add it "
                    f"to {name}'s after chain",
                )
            unarchived = [t for t in doc.hops[other].dataset_types if t not in hop.dataset_types]
            if unarchived:
                raise ConfigError(
                    file,
                    where,
                    f"hop {other} moves {name_list(unarchived)}, which "
                    f"{name} does not put on tape: releasing their site copies would "
                    f"leave them on disk only; add them to hops.{name}.dataset_types "
                    "or leave the hop out of this list",
                )


def _check_overlap(doc: CampaignDocument, file: Path) -> None:
    """Each overlap tract is one of the campaign's, processed a second time at another of its
    sites. (That site's requests are checked with the others': every campaign site runs every
    site step.)"""
    owner = {tract: site for site, tracts in doc.tracts.items() for tract in tracts}
    for tract, second in doc.qa.overlap.items():
        where = f"qa.overlap.{tract}"
        if tract not in owner:
            raise ConfigError(
                file,
                where,
                f"tract {tract} is not one of the campaign's tracts ({name_list(sorted(owner))}); "
                "overlap a tract that a site of `tracts` processes",
            )
        own = owner[tract]
        others = [site for site in doc.tracts if site != own]
        if second == own:
            raise ConfigError(
                file,
                where,
                f"tract {tract} is {own}'s own tract; name another site to process it a second time: "
                f"one of {name_list(others)}",
            )
        if second not in doc.tracts:
            raise ConfigError(
                file,
                where,
                f"{clip(second)} is not a site of this campaign (the keys of tracts); use one of {name_list(others)}",
            )
    if doc.qa.overlap and not doc.qa.compare:
        raise ConfigError(
            file,
            "qa.compare",
            "overlap tracts are processed twice but nothing is compared; "
            "name the dataset types to compare, e.g. object_table: {}",
        )


def groups_at(doc: CampaignDocument, site: str) -> int:
    """How many groups each step maps over at SITE: its tracts in groups of tracts_per_group, and
    one group per overlap tract it processes (graph.plan_groups makes them so)."""
    own = len(doc.tracts.get(site, []))
    overlap = sum(1 for second in doc.qa.overlap.values() if second == site)
    return math.ceil(own / doc.tracts_per_group) + overlap


def _check_group_counts(doc: CampaignDocument, file: Path) -> None:
    """Refused now what Airflow would refuse at run time: a step mapping more groups than
    max_map_length at a site."""
    limit = max_map_length()
    for site, tracts in doc.tracts.items():
        groups = groups_at(doc, site)
        if groups <= limit:
            continue
        overlap = groups - math.ceil(len(tracts) / doc.tracts_per_group)
        room = limit - overlap
        if room > 0:
            remedy = f"set tracts_per_group to at least {math.ceil(len(tracts) / room)}"
        else:
            remedy = f"name fewer than {limit} overlap tracts for {site} in qa.overlap (one group each)"
        raise ConfigError(
            file,
            "tracts_per_group",
            f"{site} would map {groups} groups in each step ({len(tracts)} tracts, {doc.tracts_per_group} per "
            f"group, + {overlap} overlap tracts), more than Airflow's max_map_length {limit} "
            f"(${MAX_MAP_LENGTH_ENV}) by {groups - limit}; {remedy}",
        )


def _check_compare(doc: CampaignDocument, file: Path, pipeline: PipelineSpec) -> None:
    """Each compared dataset type has numbers, is made at the sites (so an overlap tract has two
    copies) and comes home by a fan-in; each quantity is one of its numbers."""
    comparable = [name for name, spec in pipeline.dataset_types.items() if spec.columns or spec.metrics]
    fan_ins = [name for name, hop in doc.hops.items() if hop.direction == "fan_in"]
    returned = {dt for name in fan_ins for dt in doc.hops[name].dataset_types}
    producer = {output: task for task in pipeline.tasks.values() for output in task.outputs}
    for name, quantities in doc.qa.compare.items():
        where = f"qa.compare.{name}"
        spec = pipeline.dataset_types.get(name)
        if spec is None:
            raise ConfigError(
                file,
                where,
                f"{clip(name)} is not a dataset type of the pipeline {pipeline.file}; "
                f"compare one of {name_list(comparable)}",
            )
        if not spec.columns and not spec.metrics:
            raise ConfigError(
                file,
                where,
                f"{name} declares no columns or metrics in {pipeline.file}, so it has no numbers to compare; "
                f"compare one of {name_list(comparable)}, or declare them there",
            )
        step = producer[name].step  # one exists: check_pipeline refuses numbers no task makes
        if doc.steps[step].scope != "site":
            raise ConfigError(
                file,
                where,
                f"{name} is made by {step}, a global step, once at the hub: only a site step's outputs "
                "have a second site's copy to compare; compare a dataset type made at the sites",
            )
        if name not in returned:
            raise ConfigError(
                file,
                where,
                f"no fan_in hop moves {name} to the hub, so the second site's copy never comes home; "
                f"add it to the dataset_types of a fan_in hop ({name_list(fan_ins)})",
            )
        kind, known = ("column", [*spec.columns, ROWS]) if spec.columns else ("metric", spec.metrics)
        for quantity in quantities:
            if quantity not in known:
                table = f" ('{ROWS}' counts a table's rows)" if quantity == ROWS else ""
                raise ConfigError(
                    file,
                    f"{where}.{quantity}",
                    f"{clip(quantity)} is not a {kind} of {name}{table}; use one of {name_list(known)}",
                )


def _check_clustering(doc: CampaignDocument, file: Path, pipeline: PipelineSpec, step: str, dims: list[str]) -> None:
    """Clustering by a dimension needs every task of the step to have it in its data IDs."""
    tasks = [pipeline.tasks[label] for label in pipeline.step_tasks(step)]
    common = [d for d in tasks[0].dimensions if all(d in t.dimensions for t in tasks)] if tasks else []
    for i, dim in enumerate(dims):
        if dim not in common:
            own = doc.bps.steps.get(step, BpsRequest()).cluster_by is not None
            where = f"bps.steps.{step}.cluster_by[{i}]" if own else f"bps.cluster_by[{i}]"
            shared = name_list(common) if common else "no dimension"
            raise ConfigError(
                file,
                where,
                f"{step}'s quanta cannot be clustered by {clip(dim)}: its tasks "
                f"({', '.join(pipeline.step_tasks(step))}) share only {shared}; "
                f"use those, or set bps.steps.{step}.cluster_by for this step",
            )


def _check_bps_requests(doc: CampaignDocument, file: Path, sites: SitesConfig, pipeline: PipelineSpec) -> None:
    """Each step's memory request must fit the cores it asks for at every site that runs it."""
    for name in doc.bps.steps:
        if name not in doc.steps:
            raise ConfigError(
                file,
                f"bps.steps.{name}",
                f"{clip(name)} is not a step of this campaign; use one of: {name_list(doc.steps)}",
            )
    for name, step in doc.steps.items():
        request = doc.bps.for_step(name)
        _check_clustering(doc, file, pipeline, name, request.cluster_by)
        own_memory = doc.bps.steps.get(name, BpsRequest()).request_memory_mb
        where = f"bps.steps.{name}.request_memory_mb" if own_memory else "bps.request_memory_mb"
        runs_at = [step.site or sites.hub] if step.scope == "global" else list(doc.tracts)
        for site_name in runs_at:
            site = sites.sites[site_name]
            limit_mb = int(site.gb_per_core * 1024 * request.request_cpus)
            if request.request_memory_mb > limit_mb:
                raise ConfigError(
                    file,
                    where,
                    f"{name} asks {request.request_memory_mb} MB per quantum, but "
                    f"{site_name} has {site.gb_per_core:g} GB per core ({limit_mb} MB for "
                    f"{request.request_cpus} cpus); lower the request or raise request_cpus",
                )
