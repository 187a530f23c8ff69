"""Transformers injected at call time: Specs reshaped on one edge, keys follow, provenance."""

import pytest

from further_dagster import VAR, Cell, Project, Req, Session, Specs, Transformer
from further_dagster.core.iterative import find_transformer, registered_transformers
from further_dagster.errors import AddressError, DuplicateNameError, TransformerError
from tests.engine.cells import record

pytestmark = pytest.mark.unit

tf = Project("tf_demo")


class Data(Cell, project=tf):
    class Specs(Specs):
        n: int = 10
        scale: float = 1.0

    contributions = {"values": list}

    def make(self):
        record("data", self.key)
        return {"values": [i * self.specs.scale for i in range(self.specs.n)]}


class Fit(Cell, project=tf):
    class Specs(Specs):
        alpha: float = 1.0

    req_cells = {"data": Req("data")}
    contributions = {"total": float}

    def make(self):
        return {"total": sum(self.inputs["data"].values) * self.specs.alpha}


class Report(Cell, project=tf):
    req_cells = {"fits": Req("fit", alpha=VAR([1.0, 2.0])), "raw": Req("data")}
    contributions = {"totals": list, "raw": float}

    def make(self):
        return {
            "totals": [f.total for f in self.inputs["fits"]],
            "raw": sum(self.inputs["raw"].values),
        }


class Standardize(Transformer, project=tf):
    """Rescales the data to unit scale times a factor."""

    logic_version = 2

    class Specs(Specs):
        factor: float = 0.5

    def transform(self, values):
        return {"scale": values["scale"] * self.specs.factor}


class Broken(Transformer):
    def transform(self, values):
        return {"unknown_field": 1}


class Raises(Transformer):
    def transform(self, values):
        raise ValueError("no")


def session(root):
    return Session(tf, root=root, progress=False)


def test_a_transformer_reshapes_specs_on_one_path(further_tmp_root, calls):
    s = session(further_tmp_root)
    plain = s.call("tf_demo.report")
    assert plain.totals == [45.0, 90.0] and plain.raw == 45.0
    shaped = s.call("tf_demo.report", transformers={"fits/data": Standardize})
    assert shaped.totals == [22.5, 45.0]  # both swept fits see the rescaled data
    assert shaped.raw == 45.0  # the same cell through another path is untouched
    assert shaped.key != plain.key
    assert calls.count("data") == 2  # one rescaled data instance, shared by both fits
    # keys follow the Specs: asking for the same Specs directly finds it stored
    assert s.call("tf_demo.data", scale=0.5).values[1] == 0.5
    assert calls.count("data") == 2
    again = s.call("tf_demo.report", transformers={"fits/data": Standardize(factor=0.5)})
    assert again.key == shaped.key and calls.count("data") == 2
    other = s.call("tf_demo.report", transformers={"fits/data": Standardize(factor=2.0)})
    assert other.totals == [90.0, 180.0]


def test_the_transformer_is_recorded_in_provenance(further_tmp_root):
    s = session(further_tmp_root)
    plan = s.plan("tf_demo.fit", transformers={"data": Standardize(factor=0.25)})
    data = next(i for i in plan.instances if i.cell.name == "data")
    assert data.specs.scale == 0.25
    s.call("tf_demo.fit", transformers={"data": Standardize(factor=0.25)})
    extra = s.store.read_provenance("tf_demo", "data", data.key).extra
    (entry,) = extra["transformers"]
    assert entry["path"] == "data" and entry["logic_version"] == "2"
    assert entry["specs"] == {"factor": 0.25}
    assert entry["transformer"].endswith("Standardize")


def test_transformer_mistakes_are_specific_errors(further_tmp_root):
    s = session(further_tmp_root)
    with pytest.raises(AddressError, match=r"transformers=.*has no edge 'dta'.*data"):
        s.plan("tf_demo.fit", transformers={"dta": Standardize})
    with pytest.raises(TransformerError, match=r"unknown_field.*tf_demo\.data"):
        s.plan("tf_demo.fit", transformers={"data": Broken})
    with pytest.raises(TransformerError, match=r"Raises.*ValueError: no"):
        s.plan("tf_demo.fit", transformers={"data": Raises})
    with pytest.raises(TransformerError, match="Transformer subclass"):
        s.plan("tf_demo.fit", transformers={"data": lambda v: v})


def test_transformers_registered_on_a_project_are_found_by_name():
    assert registered_transformers(tf) == {"Standardize": Standardize}
    assert find_transformer("Standardize", tf, "here") is Standardize
    assert find_transformer("tests.engine.test_transformers:Broken", tf, "here") is Broken
    with pytest.raises(TransformerError, match=r"here = 'Scale'.*its transformers: Standardize"):
        find_transformer("Scale", tf, "here")
    with pytest.raises(TransformerError, match="cannot import"):
        find_transformer("tests.engine.test_transformers:Nope", tf, "here")
    with pytest.raises(TransformerError, match="not a Transformer subclass"):
        find_transformer("tests.engine.test_transformers:Data", tf, "here")


def test_two_transformers_under_one_name_are_refused(further_registry):
    other = Project("tf_other")

    class Scale(Transformer, project=other):
        def transform(self, values):
            return {}

    with pytest.raises(DuplicateNameError, match="name="):

        class Scale2(Transformer, project=other, name="Scale"):
            def transform(self, values):
                return {}

    with pytest.raises(TransformerError, match="has no ':'"):

        class Colon(Transformer, project=other, name="a:b"):
            def transform(self, values):
                return {}

    assert registered_transformers(other) == {"Scale": Scale}


def test_a_transformer_of_another_version_of_the_project_is_found(further_registry):
    """Cells of an archived project version find the transformers the project registered on
    its current version (its own first)."""
    old = Project("tf_versions", version="1.4", archived=True)
    new = Project("tf_versions", version="2.0")

    class Center(Transformer, project=new):
        def transform(self, values):
            return values

    class Clip(Transformer, project=old):
        def transform(self, values):
            return values

    class ClipNew(Transformer, project=new, name="Clip"):
        def transform(self, values):
            return values

    assert find_transformer("Center", old, "here") is Center
    assert find_transformer("Clip", old, "here") is Clip  # its own version's first
    assert find_transformer("Clip", new, "here") is ClipNew
    with pytest.raises(TransformerError, match="has no transformer 'Nope'"):
        find_transformer("Nope", old, "here")
