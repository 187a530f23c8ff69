"""ResourceCell declarations, get_release() checks, release helpers and keys."""

import os

import pytest

from further_dagster import Cell, Project, Req, ResourceCell, Specs, file_release, present
from further_dagster.core import CallContext, DefinitionGraph, Resolver
from further_dagster.core.keys import release_key, structural_key
from further_dagster.core.resource import call_get_release
from further_dagster.errors import CellDefinitionError, ReleaseError

# _declare and _cell_returning build throwaway projects whose names can repeat.
pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("further_registry")]

rc_demo = Project("rc_demo")
RELEASES = {"a": "r1"}


class Feed(ResourceCell, project=rc_demo):
    """A feed whose release tests set in RELEASES."""

    freshness = present()

    class Specs(Specs):
        name: str = "a"

    contributions = {"rows": list}

    @classmethod
    def get_release(cls, specs):
        return RELEASES[specs.name]

    def make(self):
        return {"rows": [self.release]}


class Use(Cell, project=rc_demo):
    req_cells = {"feed": Req("feed")}
    contributions = {"n": int}

    def make(self):
        return {"n": len(self.inputs["feed"].rows)}


def resolve(cell, release_of):
    ctx = CallContext(release_resolver=lambda c, specs: release_of(c, specs))
    return Resolver(DefinitionGraph([rc_demo]), ctx).instance(cell)


def test_a_resource_cell_is_a_cell_with_a_release_and_a_policy():
    assert Feed.is_resource and not Use.is_resource
    assert Feed.freshness == present()
    assert Feed.full_name == "rc_demo.feed"


def test_the_release_enters_every_downstream_key_but_not_the_structural_key():
    one = resolve(Use, lambda c, s: "r1")
    two = resolve(Use, lambda c, s: "r2")
    again = resolve(Use, lambda c, s: "r1")
    assert one.key != two.key and one.deps["feed"].key != two.deps["feed"].key
    assert one.key == again.key
    assert one.skey == two.skey and one.deps["feed"].skey == two.deps["feed"].skey
    feed = one.deps["feed"]
    assert feed.release == "r1" and one.releases() == {feed.label: "r1"}
    assert feed.skey == structural_key(Feed, feed.specs)
    assert feed.key == release_key(Feed, feed.specs, "r1")


def _declare(body: dict, bases=(ResourceCell,)):
    namespace = {"contributions": {"x": int}, "make": lambda self: {"x": 1}, **body}
    return type("Bad", bases, namespace, project=Project("rc_bad_" + str(len(body))))


def test_a_resource_cell_needs_get_release():
    with pytest.raises(CellDefinitionError, match="without get_release"):
        _declare({})


def test_get_release_must_be_a_classmethod():
    with pytest.raises(CellDefinitionError, match="must be a classmethod"):
        _declare({"get_release": lambda cls, specs: "r"})


def test_a_resource_cell_cannot_have_req_cells():
    with pytest.raises(CellDefinitionError, match="cannot have req_cells"):
        _declare(
            {
                "get_release": classmethod(lambda cls, specs: "r"),
                "req_cells": {"x": Req("rc_demo.feed")},
            }
        )


def test_freshness_must_be_a_policy():
    with pytest.raises(CellDefinitionError, match="use latest"):
        _declare({"get_release": classmethod(lambda cls, specs: "r"), "freshness": "latest"})


def _cell_returning(value):
    def get(cls, specs):
        if isinstance(value, Exception):
            raise value
        return value

    project = Project(f"rc_ret_{abs(hash(repr(value))) % 10**8}")
    return type(
        "Ret",
        (ResourceCell,),
        {
            "contributions": {"x": int},
            "make": lambda self: {"x": 1},
            "get_release": classmethod(get),
        },
        project=project,
    )


@pytest.mark.parametrize("value", [None, "", 3, b"r1", ["r1"]])
def test_get_release_must_return_a_non_empty_string(value):
    cell = _cell_returning(value)
    with pytest.raises(ReleaseError) as info:
        call_get_release(cell, cell.Specs())
    text = str(info.value)
    assert cell.full_name in text and "must return a non-empty str" in text


def test_get_release_raising_is_a_release_error_naming_the_cell_and_cause():
    cell = _cell_returning(FileNotFoundError("no such file: data.csv"))
    with pytest.raises(ReleaseError) as info:
        call_get_release(cell, cell.Specs())
    text = str(info.value)
    assert cell.full_name in text and "FileNotFoundError" in text and "data.csv" in text
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_file_release_by_mtime_is_one_stat_and_changes_with_the_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a\n")
    os.utime(path, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    assert file_release(path) == "2023-11-14T22:13:20.123456789Z/2"
    path.write_text("ab\n")
    os.utime(path, ns=(1_700_000_001_000_000_000, 1_700_000_001_000_000_000))
    assert file_release(path) == "2023-11-14T22:13:21.000000000Z/3"


def test_file_release_by_content_ignores_touching(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a\n")
    before = file_release(path, content=True)
    os.utime(path, ns=(1, 1))
    assert file_release(path, content=True) == before and before.startswith("blake2b:")
    path.write_text("b\n")
    assert file_release(path, content=True) != before
