"""Turn our DRP-shaped pipeline spec (configs/pipelines/*.yaml) into a real pipe_base pipeline of
lsst.pipe.base.tests.mocks.DynamicTestPipelineTask tasks.

Rules:
- every dataset type gets one storage class (mocked by the mock framework: `_mock_<class>`);
  catalogs and tables use ArrowAstropy, everything else StructuredDataDict;
- an input whose dimensions are not contained in the task's dimensions (after the universe's
  implied dimensions) is `multiple=True` (e.g. many detectors for a per-visit task);
- a prerequisite (a calibration, found by the quantum's time; a sky-pixel shard, by its region) is
  looked up by pipe_base when the quantum graph is built: a missing one leaves no quantum;
- each step is a labeled subset, and a pipeline for one step holds exactly that step's tasks;
- a fault `LABEL:EXPR` sets the mock's `fail_condition` (daf_butler expression on the quantum's
  data ID, e.g. `tract = 2`), so those quanta raise ValueError.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..config import PipelineSpec
from ._errors import StacksideError

TASK_CLASS = "lsst.pipe.base.tests.mocks.DynamicTestPipelineTask"

_TABLE_LIKE = re.compile(r"(_star|_summary|_table|_metrics|_qa_summary|_fit|_calib)$")


def storage_class_for(dataset_type: str) -> str:
    """The (un-mocked) storage class we give a dataset type of the spec."""
    return "ArrowAstropy" if _TABLE_LIKE.search(dataset_type) else "StructuredDataDict"


def parse_faults(faults: list[str] | None, spec: PipelineSpec, labels: list[str]) -> dict[str, str]:
    """Parse `LABEL:EXPR` strings into {label: expr}; several for one label are OR-ed."""
    out: dict[str, list[str]] = {}
    for text in faults or []:
        label, sep, expr = text.partition(":")
        label, expr = label.strip(), expr.strip()
        if not sep or not label or not expr:
            raise StacksideError(f"--fail {text!r}: expected LABEL:EXPR, e.g. isolatedStarAssociation:'tract = 2'")
        if label not in spec.tasks:
            raise StacksideError(f"--fail {text!r}: unknown task label {label!r} in {spec.file}")
        if label not in labels:
            raise StacksideError(f"--fail {text!r}: task {label!r} is not part of this step ({', '.join(labels)})")
        try:
            from lsst.daf.butler.queries.expressions.parser import parse_expression

            parse_expression(expr)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001
            raise StacksideError(f"--fail {text!r}: {expr!r} is not a valid data ID expression ({exc})") from None
        out.setdefault(label, []).append(expr)
    return {label: " OR ".join(f"({e})" for e in exprs) if len(exprs) > 1 else exprs[0] for label, exprs in out.items()}


def _is_multiple(universe, task_dims: list[str], input_dims: list[str]) -> bool:
    task_group = universe.conform(task_dims)
    input_group = universe.conform(input_dims)
    return not set(input_group.required).issubset(set(task_group.names))


def _config_python(spec: PipelineSpec, label: str, universe, fail_condition: str | None) -> str:
    task = spec.tasks[label]
    lines = [
        "from lsst.pipe.base.tests.mocks import DynamicConnectionConfig",
        f"config.dimensions = {task.dimensions!r}",
    ]
    for name in task.inputs:
        dims = spec.dataset_types[name].dimensions
        multiple = _is_multiple(universe, task.dimensions, dims)
        lines.append(
            f"config.inputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={storage_class_for(name)!r}, multiple={multiple!r})"
        )
    for name in task.prerequisites:
        dims = spec.dataset_types[name].dimensions
        lines.append(
            f"config.prerequisite_inputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={storage_class_for(name)!r}, "
            f"is_calibration={spec.dataset_types[name].calibration!r}, "
            f"multiple={_is_multiple(universe, task.dimensions, dims)!r})"
        )
    for name in task.outputs:
        dims = spec.dataset_types[name].dimensions
        task_group = universe.conform(task.dimensions)
        if not set(universe.conform(dims).required).issubset(set(task_group.names)):
            raise StacksideError(
                f"{spec.file}: task {label} output {name} has dimensions {dims} that are not part of the "
                f"task's dimensions {task.dimensions}: fix the spec"
            )
        lines.append(
            f"config.outputs[{name!r}] = DynamicConnectionConfig(dataset_type_name={name!r}, "
            f"dimensions={dims!r}, storage_class={storage_class_for(name)!r})"
        )
    if fail_condition:
        lines.append(f"config.fail_condition = {fail_condition!r}")
    return "\n".join(lines) + "\n"


class _Literal(str):
    pass


def _literal_representer(dumper, data):
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")


yaml.add_representer(_Literal, _literal_representer, Dumper=yaml.SafeDumper)


def build_pipeline_yaml(spec: PipelineSpec, step: str | None = None, faults: dict[str, str] | None = None) -> str:
    """pipe_base pipeline YAML: STEP's tasks only (or all, with one labeled subset per step)."""
    from lsst.daf.butler import DimensionUniverse

    universe = DimensionUniverse()
    labels = spec.step_tasks(step) if step else list(spec.tasks)
    faults = faults or {}
    doc: dict = {
        "description": f"{spec.description} [{step or 'all steps'}] (generated from {spec.file.name})",
        "tasks": {},
    }
    for label in labels:
        doc["tasks"][label] = {
            "class": TASK_CLASS,
            "config": {"python": _Literal(_config_python(spec, label, universe, faults.get(label)))},
        }
    subsets = {}
    for s in spec.steps():
        members = [lbl for lbl in spec.step_tasks(s) if lbl in labels]
        if members:
            subsets[s] = {"subset": members, "description": f"{s} of the DRP-shaped mock pipeline"}
    doc["subsets"] = subsets
    return yaml.safe_dump(doc, sort_keys=False, width=200)


def write_pipeline(
    spec: PipelineSpec, path: Path, step: str | None = None, faults: dict[str, str] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_pipeline_yaml(spec, step, faults))
    return path


def load_pipeline_graph(path: Path):
    """Check the generated file with pipe_base itself (raises on any error)."""
    from lsst.pipe.base import Pipeline

    return Pipeline.from_uri(str(path)).to_graph()
