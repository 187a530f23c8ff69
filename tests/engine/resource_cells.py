"""Resource cells for engine tests. Tests set the external state in `RELEASES` / `DATA`; make()
and get_release() append to $FURTHER_TEST_CALLS ("feed" / "feed_release") so tests count them."""

from further_dagster import Cell, Project, Req, ResourceCell, Specs
from tests.engine.cells import record

res_demo = Project("res_demo")

# name -> current release, and release -> the data "on the server" at that release
RELEASES: dict[str, object] = {"a": "r1", "b": "r1"}
DATA: dict[str, list[int]] = {"r1": [1, 2, 3], "r2": [10, 20, 30], "r3": [7]}


class Feed(ResourceCell, project=res_demo):
    """An external feed; its release comes from RELEASES, its rows from DATA."""

    class Specs(Specs):
        name: str = "a"

    contributions = {"rows": list}

    @classmethod
    def get_release(cls, specs):
        record("feed_release", specs.name)
        value = RELEASES[specs.name]
        if isinstance(value, Exception):
            raise value
        return value

    def make(self):
        record("feed", self.key)
        return {"rows": list(DATA[self.release])}


class Total(Cell, project=res_demo):
    """Sum of the feed."""

    class Specs(Specs):
        scale: int = 1

    req_cells = {"feed": Req("feed")}
    contributions = {"total": int}

    def make(self):
        record("total", self.key)
        return {"total": self.specs.scale * sum(self.inputs["feed"].rows)}


class Static(Cell, project=res_demo):
    """Does not touch the feed."""

    contributions = {"value": int}

    def make(self):
        record("static", self.key)
        return {"value": 42}


class Combined(Cell, project=res_demo):
    """Rests on the feed through total, and on static."""

    req_cells = {"total": Req("total"), "static": Req("static"), "other": Req("feed", name="b")}
    contributions = {"value": int}

    def make(self):
        record("combined", self.key)
        return {
            "value": self.inputs["total"].total
            + self.inputs["static"].value
            + len(self.inputs["other"].rows)
        }
