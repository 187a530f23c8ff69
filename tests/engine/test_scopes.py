"""Parameter scopes of a Session call: precedence of every pair of scopes, declared
cross-project calls, translations, called assignments and addressed paths."""

import pytest

from further_dagster import VAR, Cell, Project, ProjectParams, Req, Session, Specs
from further_dagster.errors import (
    AddressError,
    InitError,
    TranslationError,
    UndeclaredCallError,
)
from tests.engine.cells import record

pytestmark = pytest.mark.unit

INITS = """\
low:
  domain: level
  cell_specs:
    leaf: {n: 20}
  project_specs: {seed: 200}
"""


@pytest.fixture
def scoped(tmp_path, further_registry):
    """top -> mid (edge n=3, seed=30) -> leaf; leaf subscribes to the project's seed."""
    path = tmp_path / "project_inits.yaml"
    path.write_text(INITS)

    class Params(ProjectParams):
        seed: int = 2

    project = Project("scopes", params=Params, inits=path)

    class Leaf(Cell, project=project):
        class Specs(Specs):
            n: int = 1
            seed: int = 0

        project_params = ("seed",)
        contributions = {"n": int, "seed": int}

        def make(self):
            record("leaf", self.key)
            return {"n": self.specs.n, "seed": self.specs.seed}

    class Mid(Cell, project=project):
        req_cells = {"leaf": Req("leaf", n=3, seed=30)}
        contributions = {"n": int, "seed": int}

        def make(self):
            leaf = self.inputs["leaf"]
            return {"n": leaf.n, "seed": leaf.seed}

    class Top(Cell, project=project):
        req_cells = {"mid": Req("mid"), "direct": Req("leaf")}
        contributions = {"n": int, "seed": int, "direct_n": int}

        def make(self):
            mid = self.inputs["mid"]
            return {"n": mid.n, "seed": mid.seed, "direct_n": self.inputs["direct"].n}

    return project


def leaf_of(session, **kwargs):
    result = session.call("scopes.top", **kwargs)
    return result.n, result.seed


def test_each_scope_wins_over_the_one_below(scoped, further_tmp_root):
    session = Session(scoped, root=further_tmp_root, progress=False)
    # 1 Specs defaults < 2 project param default: the direct edge passes nothing
    assert session.call("scopes.top").direct_n == 1
    assert session.call("scopes.leaf").seed == 2
    # 2 project param default < 3 edge values
    assert leaf_of(session) == (3, 30)
    # 3 edge values < 4 project params set for this call (params=, a label's project_specs)
    assert leaf_of(session, params={"seed": 7}) == (3, 7)
    assert leaf_of(session, project_init_label="low")[1] == 200
    # 4 < 5 a label's cell_specs (they also beat the edge's n=3)
    assert leaf_of(session, project_init_label="low")[0] == 20
    # 5 label cell_specs < 6 session-addressed specs=
    assert leaf_of(session, project_init_label="low", specs={"scopes.leaf": {"n": 9}}) == (9, 200)
    # 4 session params= < 6 addressed specs= for the same field
    assert leaf_of(session, params={"seed": 7}, specs={"scopes.leaf": {"seed": 8}}) == (3, 8)
    # specs= < addressed paths
    assert leaf_of(session, specs={"scopes.leaf": {"n": 9}}, addressed={"mid/leaf": {"n": 11}}) == (
        11,
        30,
    )


def test_the_root_calls_own_values_win_over_everything(scoped, further_tmp_root):
    session = Session(scoped, root=further_tmp_root, progress=False)
    result = session.call(
        "scopes.leaf",
        n=5,
        seed=6,
        params={"seed": 7},
        specs={"scopes.leaf": {"n": 8, "seed": 8}},
        project_init_label="low",
    )
    assert (result.n, result.seed) == (5, 6)


def test_project_params_reach_subscribers_without_intermediates(scoped, further_tmp_root):
    session = Session(scoped, root=further_tmp_root, progress=False)
    # Mid and Top do not subscribe to seed; it reaches the leaf anyway.
    swept = session.call("scopes.top", params={"seed": VAR([4, 5])})
    assert [r.seed for r in swept] == [4, 5]


def test_addressed_path_touches_only_that_place(scoped, further_tmp_root, calls):
    session = Session(scoped, root=further_tmp_root, progress=False)
    session.call("scopes.top")
    before = calls.count("leaf")
    result = session.call("scopes.top", addressed={"direct": {"n": 12}})
    assert result.direct_n == 12
    assert result.n == 3  # the leaf under mid is not on the path
    assert calls.count("leaf") == before + 1  # only the addressed leaf is new


def test_addressed_and_named_cells_that_match_nothing_list_the_valid_ones(scoped, further_tmp_root):
    session = Session(scoped, root=further_tmp_root, progress=False)
    with pytest.raises(AddressError, match=r"no edge 'leef'.*its edges: leaf"):
        session.call("scopes.top", addressed={"mid/leef": {"n": 1}})
    with pytest.raises(AddressError, match=r"sets \['m'\].*valid fields: n, seed"):
        session.call("scopes.top", addressed={"mid/leaf": {"m": 1}})
    with pytest.raises(AddressError, match=r"reaches no cell 'scopes.lef'.*scopes.leaf"):
        session.call("scopes.top", specs={"scopes.lef": {"n": 1}})
    with pytest.raises(AddressError, match=r"opts=.*reaches no cell"):
        session.call("scopes.mid", opts={"scopes.top": {}})


# --- cross-project calls ---------------------------------------------------------------------


def lib_project(name="lib"):
    class LibParams(ProjectParams):
        window: int = 1
        label_only: int = 0

    lib = Project(name, params=LibParams, replace=True)

    class Smooth(Cell, project=lib):
        class Specs(Specs):
            window: int = 0
            label_only: int = 0

        project_params = ("window", "label_only")
        contributions = {"window": int, "label_only": int}

        def make(self):
            record("smooth", self.key)
            return {"window": self.specs.window, "label_only": self.specs.label_only}

    return lib


def test_a_call_into_an_undeclared_project_fails_at_load(further_registry, further_tmp_root):
    lib_project()
    main = Project("main_undeclared")

    class Uses(Cell, project=main):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int}

        def make(self):
            return {"w": self.inputs["smooth"].window}

    with pytest.raises(UndeclaredCallError, match=r"calls=\['lib'\]"):
        Session(main, root=further_tmp_root, progress=False).plan("main_undeclared.uses")


def test_translations_bridge_params_and_nothing_else_crosses(further_registry, further_tmp_root):
    lib_project()

    class MainParams(ProjectParams):
        smoothing: int = 5
        window: int = 99  # same name as lib's: must NOT cross without a translation

    main = Project("main_tr", params=MainParams, calls={"lib": {"window": "smoothing"}})

    class Uses(Cell, project=main):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int}

        def make(self):
            return {"w": self.inputs["smooth"].window}

    session = Session(main, root=further_tmp_root, progress=False)
    assert session.call("main_tr.uses").w == 5  # main's default smoothing
    assert session.call("main_tr.uses", params={"smoothing": 8}).w == 8
    assert [r.w for r in session.call("main_tr.uses", params={"smoothing": VAR([2, 3])})] == [2, 3]
    # the session's own value for lib stays above the translation
    assert session.call("main_tr.uses", project_params={"lib": {"window": 4}}).w == 4

    plain = Project("main_plain", params=MainParams, calls=["lib"])

    class UsesPlain(Cell, project=plain, name="uses"):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int}

        def make(self):
            return {"w": self.inputs["smooth"].window}

    assert Session(plain, root=further_tmp_root, progress=False).call("main_plain.uses").w == 1


def test_a_translation_to_or_from_an_unknown_param_is_refused(further_registry, further_tmp_root):
    lib_project()

    class MainParams(ProjectParams):
        smoothing: int = 5

    for calls, pattern in (
        ({"lib": {"widow": "smoothing"}}, r"project 'lib' has no param 'widow'"),
        ({"lib": {"window": "smoothin"}}, r"project 'bad_tr' has no param 'smoothin'"),
    ):
        bad = Project("bad_tr", params=MainParams, calls=calls, replace=True)

        class Uses(Cell, project=bad):
            req_cells = {"smooth": Req("lib.smooth")}
            contributions = {"w": int}

            def make(self):
                return {"w": 0}

        with pytest.raises(TranslationError, match=pattern):
            Session(bad, root=further_tmp_root, progress=False).plan("bad_tr.uses")


LIB_INITS = """\
fast:
  project_specs: {window: 2}
thorough:
  project_specs: {window: 50}
  cell_specs:
    smooth: {label_only: 7}
"""

MAIN_INITS = """\
routed:
  called_assignments:
    quick: {lib: fast}
    deep: {lib: thorough}
"""


def test_called_assignments_route_a_label_per_calling_cell(
    tmp_path, further_registry, further_tmp_root, calls
):
    lib = lib_project()
    (tmp_path / "lib.yaml").write_text(LIB_INITS)
    lib._inits = tmp_path / "lib.yaml"
    (tmp_path / "main.yaml").write_text(MAIN_INITS)
    main = Project("main_routed", calls=["lib"], inits=tmp_path / "main.yaml")

    class Quick(Cell, project=main):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int, "extra": int}

        def make(self):
            s = self.inputs["smooth"]
            return {"w": s.window, "extra": s.label_only}

    class Deep(Cell, project=main):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int, "extra": int}

        def make(self):
            s = self.inputs["smooth"]
            return {"w": s.window, "extra": s.label_only}

    class Both(Cell, project=main):
        req_cells = {"quick": Req("quick"), "deep": Req("deep")}
        contributions = {"quick": int, "deep": int, "extra": int}

        def make(self):
            q, d = self.inputs["quick"], self.inputs["deep"]
            return {"quick": q.w, "deep": d.w, "extra": d.extra}

    session = Session(main, root=further_tmp_root, progress=False)
    plain = session.call("main_routed.both")
    assert (plain.quick, plain.deep, plain.extra) == (1, 1, 0)
    routed = session.call("main_routed.both", project_init_label="routed")
    assert (routed.quick, routed.deep, routed.extra) == (2, 50, 7)
    assert calls.count("smooth") == 3  # window=1 shared by both plain callers, then 2 and 50


def test_a_called_assignment_naming_an_unknown_label_is_an_error(
    tmp_path, further_registry, further_tmp_root
):
    lib = lib_project()
    (tmp_path / "lib.yaml").write_text(LIB_INITS)
    lib._inits = tmp_path / "lib.yaml"
    (tmp_path / "main.yaml").write_text("bad:\n  called_assignments:\n    quick: {lib: fats}\n")
    main = Project("main_badroute", calls=["lib"], inits=tmp_path / "main.yaml")

    class Quick(Cell, project=main):
        req_cells = {"smooth": Req("lib.smooth")}
        contributions = {"w": int}

        def make(self):
            return {"w": self.inputs["smooth"].window}

    session = Session(main, root=further_tmp_root, progress=False)
    with pytest.raises(InitError, match=r"fats"):
        session.call("main_badroute.quick", project_init_label="bad")


def test_a_called_assignment_into_an_undeclared_project_is_an_error(
    tmp_path, further_registry, further_tmp_root
):
    lib_project()
    (tmp_path / "main.yaml").write_text("bad:\n  called_assignments:\n    quick: {lib: fast}\n")
    main = Project("main_undeclared_route", inits=tmp_path / "main.yaml")

    class Quick(Cell, project=main):
        contributions = {"w": int}

        def make(self):
            return {"w": 0}

    session = Session(main, root=further_tmp_root, progress=False)
    with pytest.raises(
        InitError, match=r"main.yaml:1: label .bad. routes.*does not declare calls into it"
    ):
        session.call("main_undeclared_route.quick", project_init_label="bad")


def test_a_routed_labels_freshness_applies_to_its_resource_cells(
    tmp_path, further_registry, further_tmp_root, calls
):
    """`lib`'s label `pinned` keeps its feed on release r1; routed for `use`, it holds there too,
    while the call's own `freshness=` still wins."""
    from further_dagster import ResourceCell

    current = {"release": "r1"}
    lib = Project("lib_fresh", replace=True, inits=tmp_path / "lib.yaml")
    (tmp_path / "lib.yaml").write_text("pinned:\n  freshness: {feed: 'release:r1'}\n")

    class Feed(ResourceCell, project=lib):
        contributions = {"release": str}

        @classmethod
        def get_release(cls, specs):
            record("feed_release", current["release"])
            return current["release"]

        def make(self):
            return {"release": self.release}

    (tmp_path / "main.yaml").write_text(
        "routed:\n  called_assignments:\n    use: {lib_fresh: pinned}\n"
    )
    main = Project("main_fresh", calls=["lib_fresh"], inits=tmp_path / "main.yaml")

    class Use(Cell, project=main):
        req_cells = {"feed": Req("lib_fresh.feed")}
        contributions = {"release": str}

        def make(self):
            return {"release": self.inputs["feed"].release}

    session = Session(main, root=further_tmp_root, progress=False)
    assert session.call("main_fresh.use").release == "r1"
    current["release"] = "r2"
    assert session.call("main_fresh.use").release == "r2"  # latest, by default
    routed = session.call("main_fresh.use", project_init_label="routed")
    assert routed.release == "r1"  # the routed label's pin, from the store
    own = session.call("main_fresh.use", project_init_label="routed", freshness="latest")
    assert own.release == "r2"
