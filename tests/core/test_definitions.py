"""Mistakes in cell and project definitions fail early, with the cell, field and fix named."""

import re

import pytest

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Specs
from further_dagster.core import DefinitionGraph, Resolver
from further_dagster.core.project import REGISTRY, generation, get_project, resolve_cell
from further_dagster.errors import (
    CellDefinitionError,
    ContributionError,
    DependencyCycleError,
    DuplicateNameError,
    InvalidNameError,
    SpecsValidationError,
    UnknownCellError,
)

# Several tests define a project of the same name (parametrized ones, helpers called twice).
pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("further_registry")]


def test_dependency_cycle_is_named():
    p = Project("defs_cycle")

    class A(Cell, project=p):
        req_cells = {"b": Req("b")}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    class B(Cell, project=p):
        req_cells = {"c": Req("c")}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    class C(Cell, project=p):
        req_cells = {"a": Req("a")}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(DependencyCycleError) as err:
        DefinitionGraph([p])
    message = str(err.value)
    for name in ("defs_cycle.a", "defs_cycle.b", "defs_cycle.c"):
        assert name in message
    assert "->" in message


def test_unknown_cell_in_req_cells():
    p = Project("defs_unknown")

    class A(Cell, project=p):
        req_cells = {"missing": Req("nope")}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(UnknownCellError, match=r"defs_unknown.a.req_cells\['missing'\].*nope"):
        DefinitionGraph([p])


def test_unknown_project_and_cell_in_session(further_session):
    with pytest.raises(UnknownCellError, match="no project named 'nowhere'"):
        further_session.call("nowhere.cell")
    p = Project("defs_known")

    class A(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(UnknownCellError, match="its cells are: a"):
        further_session.call("defs_known.b")


def test_duplicate_cell_name():
    p = Project("defs_dup")

    class A(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(DuplicateNameError, match="already has a cell named 'a'"):

        class Other(Cell, project=p, name="a"):
            contributions = {"v": int}

            def make(self):
                return {"v": 1}


def test_duplicate_project_name_from_another_module():
    import types

    Project("defs_twice")
    other = types.ModuleType("elsewhere")
    with pytest.raises(DuplicateNameError, match="defs_twice"):
        exec("from further_dagster import Project\nProject('defs_twice')", other.__dict__)


def test_a_second_project_of_one_name_is_refused_and_the_first_keeps_its_cells():
    first = Project("defs_again")

    class Kept(Cell, project=first):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(DuplicateNameError) as err:
        Project("defs_again")
    message = str(err.value)
    assert "'defs_again'" in message and "replace=True" in message and "Rename" in message
    assert get_project("defs_again") is first
    assert resolve_cell("defs_again.kept") is Kept


def test_replace_true_redefines_a_project_on_purpose():
    first = Project("defs_redo")

    class Old(Cell, project=first):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    before = generation()
    second = Project("defs_redo", version="2", replace=True)
    assert generation() != before
    assert get_project("defs_redo") is second and second.cells == {}
    with pytest.raises(UnknownCellError, match="has no cell 'old'"):
        resolve_cell("defs_redo.old")

    class New(Cell, project=second, name="old"):
        contributions = {"v": int}

        def make(self):
            return {"v": 2}

    assert resolve_cell("defs_redo.old") is New
    assert Project("defs_redo_fresh", replace=True).name == "defs_redo_fresh"


def test_the_registry_fixture_forgets_what_a_test_defined(further_registry):
    saved = further_registry.snapshot()
    p = Project("defs_scratch")

    class Scratch(Cell, project=p):
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    before = generation()
    further_registry.restore(saved)
    assert "defs_scratch" not in further_registry and generation() > before
    Project("defs_scratch")  # the name is free again


def test_restore_removes_cells_added_to_an_existing_project():
    p = Project("defs_base")
    with REGISTRY.isolated():

        class Added(Cell, project=p):
            contributions = {"v": int}

            def make(self):
                return {"v": 1}

        assert "added" in p.cells
    assert p.cells == {} and get_project("defs_base") is p


@pytest.mark.parametrize("name", ["abc\n", "abc\r", " abc", "a\nb"])
def test_a_name_with_a_newline_or_space_is_refused_at_definition(name):
    with pytest.raises(InvalidNameError, match="not a plain identifier"):
        Project(name)
    p = Project("defs_newline")
    with pytest.raises(InvalidNameError, match=re.escape(repr(name))):

        class Bad(Cell, project=p, name=name):
            contributions = {"v": int}

            def make(self):
                return {"v": 1}

    assert p.cells == {}
    with pytest.raises(InvalidNameError):

        class BadContribution(Cell, project=p):
            contributions = {name: int}

            def make(self):
                return {name: 1}


def test_core_and_store_share_one_identifier_rule():
    from further_dagster.core.names import check_identifier, is_identifier
    from further_dagster.store import layout

    for good in ("a", "_x1", "Cell_2"):
        assert is_identifier(good) and layout.validate_name(good) == check_identifier("n", good)
    for bad in ("abc\n", "", "1a", "a-b", "a/b", "..", None, 3):
        assert not is_identifier(bad)
        with pytest.raises(InvalidNameError):
            layout.validate_name(bad, "cell")


@pytest.mark.parametrize("name", ["../escape", "a/b", "", "1abc", "with space", ".."])
def test_names_that_would_escape_the_store(name):
    with pytest.raises(InvalidNameError, match="not a plain identifier"):
        Project(name)
    p = Project("defs_names")
    with pytest.raises(InvalidNameError):

        class Bad(Cell, project=p, name=name):
            contributions = {"v": int}

            def make(self):
                return {"v": 1}


def test_contribution_names_are_checked():
    p = Project("defs_contrib_names")
    with pytest.raises(InvalidNameError, match="contribution"):

        class Bad(Cell, project=p):
            contributions = {"../x": int}

            def make(self):
                return {}


def test_cell_without_contributions_or_make():
    p = Project("defs_incomplete")
    with pytest.raises(CellDefinitionError, match="declares no contributions"):

        class NoContrib(Cell, project=p):
            def make(self):
                return {}

    with pytest.raises(CellDefinitionError, match="must define make"):

        class NoMake(Cell, project=p):
            contributions = {"v": int}


def test_edge_value_for_unknown_field():
    p = Project("defs_edge")

    class Up(Cell, project=p):
        class Specs(Specs):
            n: int = 1

        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    class Down(Cell, project=p):
        req_cells = {"up": Req("up", m=2)}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    with pytest.raises(CellDefinitionError, match=r"passes \['m'\].*valid fields: n"):
        DefinitionGraph([p])


def test_project_param_subscription_is_checked():
    class Params(ProjectParams):
        seed: int = 0

    p = Project("defs_params", params=Params)
    with pytest.raises(CellDefinitionError, match="does not define"):

        class A(Cell, project=p):
            project_params = ("nope",)
            contributions = {"v": int}

            def make(self):
                return {"v": 1}

    with pytest.raises(CellDefinitionError, match="Specs have no field 'seed'"):

        class B(Cell, project=p):
            project_params = ("seed",)
            contributions = {"v": int}

            def make(self):
                return {"v": 1}


def _specs_project():
    p = Project("defs_specs")

    class Train(Cell, project=p):
        class Specs(Specs):
            lr: float = 0.1
            epochs: int = 3

        contributions = {"v": float}

        def make(self):
            return {"v": self.specs.lr}

    return p, Train


def test_specs_validation_names_cell_field_value_and_expectation(further_session):
    _specs_project()
    with pytest.raises(SpecsValidationError) as err:
        further_session.call("defs_specs.train", epochs="many")
    message = str(err.value)
    assert "defs_specs.train" in message
    assert "epochs" in message
    assert "'many'" in message
    assert "integer" in message


def test_unknown_spec_field_lists_valid_ones(further_session):
    _specs_project()
    with pytest.raises(SpecsValidationError, match="unknown field.*valid fields: epochs, lr"):
        further_session.call("defs_specs.train", lrr=0.2)


def test_make_returning_undeclared_or_missing_contributions(further_session):
    p = Project("defs_make")

    class Extra(Cell, project=p):
        contributions = {"a": int}

        def make(self):
            return {"a": 1, "b": 2}

    class Missing(Cell, project=p):
        contributions = {"a": int, "b": int}

        def make(self):
            return {"a": 1}

    class WrongType(Cell, project=p):
        contributions = {"a": int}

        def make(self):
            return {"a": "one"}

    with pytest.raises(Exception) as err:
        further_session.call("defs_make.extra")
    assert isinstance(err.value, ContributionError)  # issue #8: no longer wrapped
    assert "undeclared ['b']" in str(err.value)
    with pytest.raises(Exception, match=r"missing \['b'\]"):
        further_session.call("defs_make.missing")
    with pytest.raises(Exception, match="returned str for contribution 'a', declared as int"):
        further_session.call("defs_make.wrong_type")


def test_var_on_edge_needs_values():
    with pytest.raises(ValueError, match="at least one value"):
        VAR([])
    with pytest.raises(TypeError, match="list of values"):
        VAR("abc")


def test_resolver_merges_in_documented_order():
    class Params(ProjectParams):
        seed: int = 1

    p = Project("defs_order", params=Params)

    class Up(Cell, project=p):
        class Specs(Specs):
            seed: int = 0
            a: int = 0
            b: int = 0
            c: int = 0

        project_params = ("seed",)
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    class Down(Cell, project=p):
        req_cells = {"up": Req("up", a=1, b=1, c=1)}
        contributions = {"v": int}

        def make(self):
            return {"v": 1}

    from further_dagster.core import CallContext

    graph = DefinitionGraph([p])
    inst = Resolver(
        graph, CallContext(params={"defs_order": {"seed": 5}}, specs={"defs_order.up": {"b": 2}})
    ).instance(Down)
    up = inst.deps["up"]
    # default < project param < edge value < session-addressed value
    assert (up.specs.seed, up.specs.a, up.specs.b, up.specs.c) == (5, 1, 2, 1)
