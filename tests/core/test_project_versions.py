"""Versioned projects: an archived project version beside the current one, picked by callers'
declared ranges, each with its own keys, scopes and addresses."""

import pytest

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Session, Specs
from further_dagster.core import DefinitionGraph
from further_dagster.core.keys import logic_key, reference_logic_key
from further_dagster.core.project import REGISTRY, get_project, resolve_cell
from further_dagster.errors import (
    DuplicateNameError,
    TranslationError,
    UnknownCellError,
    VersionError,
)

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("further_registry")]


class OldParams(ProjectParams):
    window: int = 3


class NewParams(ProjectParams):
    window: int = 5
    center: bool = False  # new in 2.0


def lib_versions(name="plib"):
    """lib 1.4 (archived) and lib 2.0 (current), each with a `fit` that says which it is."""
    old = Project(name, version="1.4", archived=True, params=OldParams)

    class Prep(Cell, project=old):
        class Specs(Specs):
            window: int = 3

        project_params = ("window",)
        contributions = {"w": int}

        def make(self):
            return {"w": self.specs.window}

    class Fit(Cell, project=old):
        req_cells = {"prep": Req("prep")}  # its own project: lib 1.4's prep
        contributions = {"impl": str}

        def make(self):
            return {"impl": f"v1.4 w={self.inputs['prep'].w}"}

    new = Project(name, version="2.0", params=NewParams)

    class Prep2(Cell, project=new, name="prep"):
        class Specs(Specs):
            window: int = 5

        project_params = ("window",)
        contributions = {"w": int}

        def make(self):
            return {"w": self.specs.window}

    class Fit2(Cell, project=new, name="fit"):
        req_cells = {"prep": Req("prep")}
        contributions = {"impl": str}

        def make(self):
            return {"impl": f"v2.0 w={self.inputs['prep'].w}"}

    return old, new


def user(name, calls):
    app = Project(name, calls=calls)

    class Use(Cell, project=app):
        req_cells = {"fit": Req("plib.fit")}
        contributions = {"impl": str}

        def make(self):
            return {"impl": self.inputs["fit"].impl}

    return app, Use


def test_two_versions_coexist_and_a_declared_range_picks_one(further_tmp_root):
    old, new = lib_versions()
    pinned, _ = user("papp_old", {"plib": ">=1,<2"})
    current, _ = user("papp_new", ["plib"])
    assert get_project("plib") is new and old.address == "plib@1.4" and new.address == "plib"
    assert resolve_cell("plib@1.4.fit").project is old
    assert resolve_cell("plib.fit").project is new
    assert resolve_cell("plib@1.4.fit").full_name == "plib@1.4.fit"

    session = Session(pinned, current, root=further_tmp_root, progress=False)
    assert session.call("papp_old.use").impl == "v1.4 w=3"  # 1.4's fit on 1.4's prep
    assert session.call("papp_new.use").impl == "v2.0 w=5"
    assert session.call("plib@1.4.fit").impl == "v1.4 w=3"
    assert session.call("plib.fit").impl == "v2.0 w=5"
    # one store, one graph, different logic keys
    keys = {session.call("plib@1.4.fit").key, session.call("plib.fit").key}
    assert len(keys) == 2
    # a project given brings its other versions (as a cell its archived ones); a project
    # reached through an edge brings only the version reached
    assert set(DefinitionGraph([new]).projects) == {"plib", "plib@1.4"}
    assert set(DefinitionGraph([current]).projects) == {"papp_new", "plib"}
    plan = session.plan("papp_old.use")
    assert {i.cell.full_name for i in plan.instances} == {
        "papp_old.use",
        "plib@1.4.fit",
        "plib@1.4.prep",
    }
    assert plan.missing == []


def test_each_version_has_its_own_params_and_translations(further_tmp_root):
    lib_versions()

    class AppParams(ProjectParams):
        smoothing: int = 7

    app = Project(
        "papp_tr",
        params=AppParams,
        calls={"plib": {"version": "<2", "window": "smoothing"}},
    )

    class Use(Cell, project=app):
        req_cells = {"fit": Req("plib.fit")}
        contributions = {"impl": str}

        def make(self):
            return {"impl": self.inputs["fit"].impl}

    assert app.calls["plib"].version == "<2"
    # translations are checked against the version the range picks: 1.4 has no `center`
    wrong = Project(
        "papp_tr_bad", params=AppParams, calls={"plib": {"version": "<2", "center": "smoothing"}}
    )

    class UseBad(Cell, project=wrong, name="use"):
        req_cells = {"fit": Req("plib.fit")}
        contributions = {"impl": str}

        def make(self):
            return {"impl": ""}

    with pytest.raises(TranslationError, match=r"project 'plib@1.4' has no param 'center'"):
        DefinitionGraph([wrong])
    assert dict(app.calls["plib"].translations) == {"window": "smoothing"}
    session = Session(app, root=further_tmp_root, progress=False)
    assert session.call("papp_tr.use").impl == "v1.4 w=7"  # translated into lib 1.4
    assert session.call("papp_tr.use", params={"smoothing": 2}).impl == "v1.4 w=2"
    # an archived version's params are addressed with its version; the current one's by name
    assert session.call("plib.fit", project_params={"plib@1.4": {"window": 9}}).impl == "v2.0 w=5"
    assert (
        session.call("plib@1.4.fit", project_params={"plib@1.4": {"window": 9}}).impl == "v1.4 w=9"
    )
    assert session.call("plib@1.4.prep", params={"window": 4}).w == 4
    swept = session.call("plib@1.4.fit", project_params={"plib@1.4": {"window": VAR([1, 2])}})
    assert [r.impl for r in swept] == ["v1.4 w=1", "v1.4 w=2"]


def test_a_project_version_enters_keys_only_when_it_is_not_1(further_tmp_root):
    def key_of(version):
        with REGISTRY.isolated():
            p = Project("pkey", **({} if version is None else {"version": version}))

            class Plain(Cell, project=p):
                contributions = {"x": int}

                def make(self):
                    return {"x": 1}

            specs = Plain.Specs()
            found = logic_key(Plain, specs, {}, None)
            assert found == reference_logic_key(Plain, specs, {}, None)
            return found

    unset = key_of(None)
    assert key_of("1") == key_of("1.0") == key_of(1) == unset  # the keys of before
    current_1_4 = key_of("1.4")
    assert key_of("2.0") != unset and key_of("2.0") == key_of("2") != current_1_4
    with REGISTRY.isolated():
        p = Project("pkey", version="1.4", archived=True)

        class Plain(Cell, project=p):
            contributions = {"x": int}

            def make(self):
                return {"x": 1}

        assert logic_key(Plain, Plain.Specs(), {}, None) == current_1_4  # archiving keeps it


def test_results_of_a_project_version_stay_found_once_it_is_archived(further_tmp_root):
    with REGISTRY.isolated():
        p = Project("pkeep", version="1.4")

        class Fit(Cell, project=p):
            contributions = {"impl": str}

            def make(self):
                return {"impl": "v1.4"}

        stored = Session(p, root=further_tmp_root, progress=False).call("pkeep.fit").key

    old = Project("pkeep", version="1.4", archived=True)

    class FitOld(Cell, project=old, name="fit"):
        contributions = {"impl": str}

        def make(self):
            raise AssertionError("stored: must not run")

    new = Project("pkeep", version="2.0")

    class FitNew(Cell, project=new, name="fit"):
        contributions = {"impl": str}

        def make(self):
            return {"impl": "v2.0"}

    session = Session(new, root=further_tmp_root, progress=False)
    assert session.plan("pkeep@1.4.fit").roots[0].key == stored
    assert session.plan("pkeep@1.4.fit").missing == []
    assert session.call("pkeep@1.4.fit").impl == "v1.4"
    assert session.call("pkeep.fit").impl == "v2.0"


def test_project_version_mistakes_are_clear(further_tmp_root):
    lib_versions()
    with pytest.raises(DuplicateNameError, match=r"two current versions.*version='2.0', archived"):
        Project("plib", version="2.1")
    with pytest.raises(DuplicateNameError, match=r"already defined at version 1.4.*replace=True"):
        Project("plib", version="1.4.0", archived=True)
    with pytest.raises(VersionError, match=r"Project\('pbad'\): version 'one' is not a PEP 440"):
        Project("pbad", version="one")
    with pytest.raises(VersionError, match="not a PEP 440 specifier"):
        Project("pbad_range", calls={"plib": "about two"})

    app, _ = user("papp_none", {"plib": ">=3"})
    with pytest.raises(VersionError) as err:
        Session(app, root=further_tmp_root, progress=False).plan("papp_none.use")
    message = str(err.value)
    assert "papp_none.use.req_cells['fit']" in message
    assert "Project('papp_none', calls={'plib': '>=3'})" in message
    assert "project 'plib'" in message and "available versions: 1.4, 2.0" in message
    assert "archived=True" in message

    narrow = Project("papp_addr", calls={"plib": "<2"})

    class Explicit(Cell, project=narrow):
        req_cells = {"fit": Req("plib@2.0.fit")}
        contributions = {"impl": str}

        def make(self):
            return {"impl": ""}

    with pytest.raises(VersionError, match=r"requires plib.fit \(project 'plib' version 2.0\).*"):
        DefinitionGraph([narrow])
    with pytest.raises(VersionError, match=r"cell reference 'plib@3.fit'.*1.4, 2.0"):
        resolve_cell("plib@3.fit")
    with pytest.raises(UnknownCellError, match="is not an address"):
        resolve_cell("plib.a.fit")


def test_replace_redefines_the_current_version_and_keeps_the_archived_one():
    old, new = lib_versions()
    again = Project("plib", version="2.1", replace=True)
    assert get_project("plib") is again and REGISTRY.family("plib") == {
        old.parsed_version: old,
        again.parsed_version: again,
    }
    assert REGISTRY.siblings(again) == [old] and REGISTRY.siblings(new) == []


def test_freshness_can_target_one_version_of_a_project(further_tmp_root):
    """`freshness={"flib@1.4": ...}` covers that version's resource cells only; "flib" covers
    every version; a cell scope of an archived version works the same way."""
    from further_dagster import ResourceCell
    from further_dagster.errors import ReleaseError

    current = {"release": "r1"}

    def feed_in(project):
        class Feed(ResourceCell, project=project):
            contributions = {"release": str}

            @classmethod
            def get_release(cls, specs):
                return current["release"]

            def make(self):
                return {"release": self.release}

    feed_in(Project("flib", version="1.4", archived=True))
    feed_in(Project("flib", version="2.0"))
    session = Session(root=further_tmp_root, progress=False)
    assert session.call("flib@1.4.feed").release == session.call("flib.feed").release == "r1"
    current["release"] = "r2"
    pinned = {"flib@1.4": "release:r1"}
    assert session.call("flib@1.4.feed", freshness=pinned).release == "r1"
    assert session.call("flib.feed", freshness=pinned).release == "r2"  # 2.0: not covered
    assert session.call("flib.feed", freshness={"flib": "release:r1"}).release == "r1"
    assert session.call("flib@1.4.feed", freshness={"flib@1.4.feed": "present"}).release == "r1"
    with pytest.raises(ReleaseError, match="'flib@9' names no loaded project"):
        session.call("flib.feed", freshness={"flib@9": "latest"})
