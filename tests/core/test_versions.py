"""Versions that coexist: archived cell classes beside the current one, and version pins."""

import pytest

from further_dagster import Cell, Project, Req, Session, Specs
from further_dagster.errors import CellDefinitionError, DuplicateNameError, VersionError

pytestmark = pytest.mark.unit


def fit_versions(project):
    class FitV1(Cell, project=project, name="fit", archived=True):
        api_version = "1.4"

        class Specs(Specs):
            alpha: float = 1.0

        contributions = {"impl": str}

        def make(self):
            return {"impl": f"v1 alpha={self.specs.alpha}"}

    class Fit(Cell, project=project):
        api_version = "2.0"

        class Specs(Specs):
            alpha: float = 1.0
            l1: float = 0.0  # new in 2.0

        contributions = {"impl": str}

        def make(self):
            return {"impl": f"v2 alpha={self.specs.alpha}"}

    return FitV1, Fit


def test_archived_and_current_coexist_with_their_own_keys(further_registry, further_tmp_root):
    project = Project("ver")
    old, new = fit_versions(project)

    class Old(Cell, project=project):
        req_cells = {"fit": Req("fit", version=">=1.2,<2.0", alpha=0.5)}
        contributions = {"impl": str}

        def make(self):
            return {"impl": self.inputs["fit"].impl}

    class New(Cell, project=project):
        req_cells = {"fit": Req("fit", alpha=0.5)}
        contributions = {"impl": str}

        def make(self):
            return {"impl": self.inputs["fit"].impl}

    assert project.cell("fit") is new and project.cell("fit", ">=1,<2") is old
    assert old.full_name == "ver.fit@1.4" and new.full_name == "ver.fit"
    session = Session(project, root=further_tmp_root, progress=False)
    assert session.call("ver.old").impl == "v1 alpha=0.5"
    assert session.call("ver.new").impl == "v2 alpha=0.5"
    assert session.call("ver.fit@1.4", alpha=0.5).impl == "v1 alpha=0.5"
    keys = {session.call("ver.fit@1.4").key, session.call("ver.fit").key}
    assert len(keys) == 2  # one store, different logic keys
    # both versions are in one definition graph (each its own asset in Dagster)
    plan = session.plan("ver.old")
    assert {i.cell.full_name for i in plan.instances} == {"ver.old", "ver.fit@1.4"}


def test_results_of_a_version_stay_found_once_it_is_archived(further_registry, further_tmp_root):
    project = Project("ver_keep")

    class Fit(Cell, project=project):
        api_version = "1.4"
        contributions = {"impl": str}

        def make(self):
            return {"impl": "v1"}

    session = Session(project, root=further_tmp_root, progress=False)
    stored = session.call("ver_keep.fit").key
    project.cells.clear()
    project.versions.clear()

    class FitV1(Cell, project=project, name="fit", archived=True):
        api_version = "1.4"
        contributions = {"impl": str}

        def make(self):
            raise AssertionError("stored: must not run")

    class Fit2(Cell, project=project, name="fit"):
        api_version = "2.0"
        contributions = {"impl": str}

        def make(self):
            return {"impl": "v2"}

    session = Session(project, root=further_tmp_root, progress=False)
    assert session.plan("ver_keep.fit@1.4").roots[0].key == stored
    assert session.plan("ver_keep.fit@1.4").missing == []
    assert session.call("ver_keep.fit").impl == "v2"


def test_a_default_api_version_stays_out_of_the_key(further_registry):
    project = Project("ver_default")

    class Plain(Cell, project=project):
        contributions = {"x": int}

        def make(self):
            return {"x": 1}

    from further_dagster.core.keys import logic_key, reference_logic_key

    specs = Plain.Specs()
    assert logic_key(Plain, specs, {}, None) == reference_logic_key(Plain, specs, {}, None)
    Plain.api_version = "3"
    try:
        assert logic_key(Plain, specs, {}, None) == reference_logic_key(Plain, specs, {}, None)
    finally:
        Plain.api_version = 1


def test_version_mistakes_are_clear_at_load(further_registry, further_tmp_root):
    project = Project("ver_bad")
    fit_versions(project)

    class Pinned(Cell, project=project):
        req_cells = {"fit": Req("fit", version=">=3")}
        contributions = {"x": int}

        def make(self):
            return {"x": 0}

    with pytest.raises(VersionError, match=r"ver_bad.pinned.req_cells\['fit'\].*1.4, 2.0"):
        Session(project, root=further_tmp_root, progress=False).plan("ver_bad.pinned")

    with pytest.raises(DuplicateNameError, match="archived=True"):

        class Again(Cell, project=project, name="fit"):
            api_version = "2.1"
            contributions = {"impl": str}

            def make(self):
                return {"impl": ""}

    with pytest.raises(VersionError, match="not a PEP 440 version"):

        class Odd(Cell, project=project):
            api_version = "one"
            contributions = {"x": int}

            def make(self):
                return {"x": 0}

    with pytest.raises(VersionError, match="not a PEP 440 specifier"):
        Req("fit", version="about two")

    with pytest.raises(CellDefinitionError, match="'version', which is reserved"):

        class Reserved(Cell, project=project):
            class Specs(Specs):
                version: int = 1

            contributions = {"x": int}

            def make(self):
                return {"x": 0}


def test_edge_values_for_another_version_suggest_a_pin(further_registry, further_tmp_root):
    project = Project("ver_hint")
    fit_versions(project)

    class UsesL1(Cell, project=project):
        req_cells = {"fit": Req("fit", version="<2", l1=0.1)}
        contributions = {"x": int}

        def make(self):
            return {"x": 0}

    with pytest.raises(CellDefinitionError, match=r"versions in the code: 1.4, 2.0"):
        Session(project, root=further_tmp_root, progress=False).plan("ver_hint.uses_l1")
