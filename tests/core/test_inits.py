"""project_inits.yaml: the loader, label checks, merges, domains (core/inits.py)."""

import pytest

from further_dagster import Cell, Opts, Project, ProjectParams, Specs
from further_dagster.core.inits import check_labels, load_inits, parse_inits, select
from further_dagster.errors import InitError

pytestmark = pytest.mark.unit

TEXT = """\
fast:
  purpose: "Exploratory mode"
  domain: speed
  cell_specs:
    analyzer: {threshold: 0.5}
  project_specs: {seed: 1}
thorough:
  domain: speed
  cell_specs:
    analyzer: {threshold: 0.01}
detailed_output:
  domain: output
  opts: {analyzer: {verbose: true}}
  cell_specs:
    analyzer: {mode: full}
clashing:
  domain: other
  cell_specs:
    analyzer: {threshold: 0.9}
"""


class Params(ProjectParams):
    seed: int = 0


inits_project = Project("inits_demo", params=Params)


class Analyzer(Cell, project=inits_project):
    class Specs(Specs):
        threshold: float = 0.1
        mode: str = "approximate"
        seed: int = 0

    class Opts(Opts):
        verbose: bool = False

    project_params = ("seed",)
    contributions = {"x": float}

    def make(self):
        return {"x": self.specs.threshold}


def test_labels_are_read_with_their_lines():
    labels = parse_inits(TEXT, source="p/project_inits.yaml")
    assert sorted(labels) == ["clashing", "detailed_output", "fast", "thorough"]
    fast = labels["fast"]
    assert fast.where == "p/project_inits.yaml:1" and fast.domain == "speed"
    assert fast.cell_specs == {"analyzer": {"threshold": 0.5}} and fast.project_specs == {"seed": 1}
    assert labels["thorough"].where == "p/project_inits.yaml:7"


def test_labels_of_different_domains_merge():
    labels = parse_inits(TEXT)
    merged = select(labels, ["fast", "detailed_output"])
    assert merged.labels == ("fast", "detailed_output")
    assert merged.cell_specs == {"analyzer": {"threshold": 0.5, "mode": "full"}}
    assert merged.opts == {"analyzer": {"verbose": True}} and merged.project_specs == {"seed": 1}
    assert select(labels, "thorough").cell_specs == {"analyzer": {"threshold": 0.01}}
    assert select(labels, None).cell_specs == {}


def test_two_labels_of_one_domain_are_an_error_naming_both_and_the_domain():
    with pytest.raises(InitError, match=r"'fast' .* and 'thorough' .* domain 'speed'"):
        select(parse_inits(TEXT), ["fast", "thorough"])


def test_two_labels_setting_one_value_is_an_error_not_a_silent_winner():
    with pytest.raises(InitError, match=r"both set cell_specs.analyzer.threshold"):
        select(parse_inits(TEXT), ["fast", "clashing"])


def test_an_unknown_label_lists_the_labels():
    with pytest.raises(InitError, match="unknown project_init_label 'slow'.*clashing, detailed"):
        select(parse_inits(TEXT), "slow")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("fast: [1, 2", r"project_inits.yaml:\d+: not valid YAML"),
        ("fast:\n  colour: red\n", r"project_inits.yaml:2: label 'fast' has unknown key"),
        ("fast:\n  cell_specs: 3\n", r"project_inits.yaml:2: fast.cell_specs must be a mapping"),
        ("- a\n- b\n", "the top level must map label names"),
        ("1bad: {}\n", "must be a plain identifier"),
    ],
)
def test_file_mistakes_name_the_file_and_line(text, match):
    with pytest.raises(InitError, match=match):
        parse_inits(text)


def test_labels_are_checked_against_the_project():
    def check(text):
        check_labels(
            parse_inits(text),
            project="inits_demo",
            cells=inits_project.cells,
            params=Params.model_fields,
            resources=[],
        )

    check(TEXT)  # everything it names exists
    with pytest.raises(InitError, match="names cell 'nope'.*its cells are \\['analyzer'\\]"):
        check("x:\n  cell_specs: {nope: {a: 1}}\n")
    with pytest.raises(InitError, match=r"Specs field\(s\) \['depth'\]"):
        check("x:\n  cell_specs: {analyzer: {depth: 1}}\n")
    with pytest.raises(InitError, match=r"Opts field\(s\) \['loud'\]"):
        check("x:\n  opts: {analyzer: {loud: true}}\n")
    with pytest.raises(InitError, match=r"project param\(s\) \['speed'\]"):
        check("x:\n  project_specs: {speed: 1}\n")
    with pytest.raises(InitError, match="not a resource cell"):
        check("x:\n  freshness: {analyzer: present}\n")


def test_a_missing_file_has_no_labels(tmp_path):
    assert load_inits(tmp_path / "project_inits.yaml") == {}
    (tmp_path / "project_inits.yaml").write_text(TEXT)
    assert sorted(load_inits(tmp_path / "project_inits.yaml")) == [
        "clashing",
        "detailed_output",
        "fast",
        "thorough",
    ]


def test_a_project_reads_and_checks_its_labels(tmp_path, further_registry):
    path = tmp_path / "project_inits.yaml"
    path.write_text(TEXT)
    project = Project("inits_file_demo", params=Params, inits=path)

    class Analyzer2(Cell, project=project, name="analyzer"):
        class Specs(Specs):
            threshold: float = 0.1
            mode: str = "approximate"

        class Opts(Opts):
            verbose: bool = False

        contributions = {"x": float}

        def make(self):
            return {"x": self.specs.threshold}

    assert sorted(project.labels()) == ["clashing", "detailed_output", "fast", "thorough"]
    assert project.select_labels("fast").project_specs == {"seed": 1}
    path.write_text("x:\n  cell_specs: {analyzer: {depth: 3}}\n")  # edited: read again
    with pytest.raises(InitError, match=f"{path}:1: label 'x' sets Specs field"):
        project.labels()


def test_by_default_labels_live_beside_the_cells_module():
    assert inits_project.inits_path is not None
    assert inits_project.inits_path.name == "project_inits.yaml"
    assert inits_project.inits_path.parent.name == "core"
    assert inits_project.labels() == {}  # tests/core has no project_inits.yaml
