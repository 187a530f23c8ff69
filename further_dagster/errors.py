"""Every error further_dagster raises on purpose.

One base class, `FurtherError`, so callers can catch the whole family; each subclass names one
kind of mistake. Messages say which cell, which field and how to fix it. Only the dagster layer
turns these into Dagster failures.
"""

from __future__ import annotations


class FurtherError(Exception):
    """Base class of every error raised by further_dagster."""


class ConfigurationError(FurtherError):
    """A setting (a `FURTHER_*` environment variable or the constructor argument it defaults)
    has a value that is not allowed; the message names the setting, the value given and what is
    allowed (see `further_dagster.settings`)."""


# --- definition and load time -------------------------------------------------------------


class CellDefinitionError(FurtherError):
    """A cell or project is declared wrongly (bad attribute, bad req edge, bad contributions)."""


class InvalidNameError(CellDefinitionError):
    """A project, cell or contribution name is not a plain identifier (could escape the store)."""


class DuplicateNameError(CellDefinitionError):
    """Two cells of one project, or two projects of one session, share a name."""


class UnknownCellError(CellDefinitionError):
    """A name refers to no known cell or project."""


class DependencyCycleError(CellDefinitionError):
    """req_cells form a cycle; the message lists the cycle."""


class SpecsValidationError(FurtherError):
    """Specs or Opts values fail validation; the message names the cell, the field, the value
    given and what was expected."""


class ContributionError(FurtherError):
    """make() returned an undeclared contribution, missed a declared one, or a wrong type."""


# --- store -------------------------------------------------------------------------------


class StoreError(FurtherError):
    """The artifact store cannot be read or written."""


class LockTimeout(StoreError):
    """Waited longer than the configured timeout for another process's live lease."""


class CorruptArtifactError(StoreError):
    """A committed artifact directory is missing files or cannot be decoded."""


class CodecError(StoreError):
    """A contribution value cannot be encoded or decoded by any codec."""


# --- execution ---------------------------------------------------------------------------


class CellComputeError(FurtherError):
    """make() raised. Carries the cell, the logic key and the state file with the traceback."""

    def __init__(
        self,
        message: str,
        *,
        cell: str = "",
        key: str = "",
        state_path: str = "",
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.cell = cell
        self.key = key
        self.state_path = state_path
        self.remote_traceback = remote_traceback


class ExecutionModeError(FurtherError):
    """An execution mode is unknown or escalates past the session's ceiling."""


# --- resources ---------------------------------------------------------------------------


class ReleaseError(FurtherError):
    """A resource cell's release cannot be resolved under its freshness policy."""


# --- slurm -------------------------------------------------------------------------------


class SlurmSubmissionError(FurtherError):
    """sbatch refused a job; the message carries sbatch's own error."""


class SlurmJobError(FurtherError):
    """A Slurm job failed, was cancelled, preempted past its limit or timed out."""


class UnknownPartitionError(FurtherError):
    """A run asks for a partition the cell's asset does not have (the partitions follow the
    cells' logic keys: reload the code location after a change)."""


# --- trust (store) -------------------------------------------------------------------------


class UntrustedPickleError(FurtherError):
    """A pickled contribution would have been unpickled (running code it carries) although the
    store does not trust who could have written it: another project that no trust declaration
    names (`Session(trust=[...])`, `build_definitions(..., trust=[...])`), or an instance
    directory another user owns or can write (unless the store is shared:
    `ArtifactStore(shared=True)` / `FURTHER_SHARED_STORE=1`). The message names the project,
    cell, key and file, and the fix."""


# --- attempts (store) ----------------------------------------------------------------------


class InputLoadError(StoreError):
    """make()'s inputs could not be loaded: a dependency's stored result is damaged, missing or
    unreadable. Not the cell's fault, so the attempt is recorded as `environment` and does not
    count toward `FURTHER_MAX_ATTEMPTS`; the message names the cell, the edge, the dependency
    and the original error (also its `__cause__`)."""


class CorruptInputError(InputLoadError, CorruptArtifactError):
    """make()'s input is a damaged stored result: both an `InputLoadError` (the attempt is an
    `environment` one) and a `CorruptArtifactError` (so `except CorruptArtifactError` catches
    a dependent that read a damaged upstream). The damaged upstream was moved aside, and the
    next call recomputes it."""


class UntrustedInputError(InputLoadError, UntrustedPickleError):
    """make()'s input is a pickle the store does not trust (see `UntrustedPickleError`)."""


class SelectionError(FurtherError):
    """A `further-dagster materialize` selection or partition matches nothing it can run."""


class InitError(CellDefinitionError):
    """A `project_inits.yaml` or a `project_init_label=` selection is wrong; the message names
    the file and line (or the labels) and the fix."""


class ParameterKindError(CellDefinitionError):
    """A parameter kind is misused: an empty RAND range, DYN mixed with VAR on one edge, a
    runtime kind where only plain values are allowed."""


class UndeclaredCallError(CellDefinitionError):
    """A cell requires a cell of a project its own project does not declare in `calls=`."""


class TranslationError(CellDefinitionError):
    """A `calls={"lib": {"called_param": "caller_param"}}` translation names a param one of the
    two projects does not have."""


class AddressError(FurtherError):
    """An addressed path (`addressed={"fits/data": ...}`) or a `specs=`/`opts=` cell name of a
    call matches nothing the call reaches; the message lists the valid ones."""


class DynamicCallError(FurtherError):
    """`self.call(edge, ...)` inside make() on an edge that is not DYN/STUB, or without the
    values the edge leaves to the caller."""


# --- iterative computations (core/iterative.py) -------------------------------------------


class IterationError(FurtherError):
    """An ITER loop could not be unrolled when a call was resolved; the message names the cell
    and the edge."""


class SwitchError(IterationError):
    """A call switch (`Req(..., switch=...)`) raised or returned no bool for a caller's Specs."""


class UnrollLimitError(IterationError):
    """An ITER unrolling went past `FURTHER_MAX_UNROLL` steps (its switch never turned off), or
    the ITER field was overridden by a session-level value so the loop could not advance."""


class ConvergenceError(IterationError):
    """A recursive unit's last cell did not report convergence within `max_rounds` rounds."""


class IncrementsError(FurtherError):
    """An `Increments(...)` instruction is malformed (not exactly one of exactly / at_least /
    best / more, or a count that is not a positive integer), or `increments=` is given for a
    cell that is not an `IncrementingCell`."""


class TransformerError(FurtherError):
    """A transformer injected with `transformers={"path": T}` raised, returned something that
    is not a dict, or returned a field the Specs of the cell at its edge lack."""


# --- the SQL index (store/index) -----------------------------------------------------------


class RecordIndexError(StoreError):
    """The SQL index of the store (`FURTHER_INDEX_URL`, default `<root>/.index.sqlite`) cannot
    be used. The store's files stay the source of truth: `further-dagster index rebuild`
    rebuilds the index from them."""


class IndexConnectionError(RecordIndexError):
    """The index URL cannot be connected to; the message shows the URL without its password
    and the fix."""


class IndexSchemaError(RecordIndexError):
    """The index was written by another schema version (a newer further_dagster); the message
    says whether to upgrade further_dagster or rebuild the index."""


class IndexQueryError(RecordIndexError):
    """A query of the index failed; the message carries the SQL error, the query, and the
    tables and views there are."""


class VersionError(CellDefinitionError):
    """A version that is not PEP 440, a pin no version satisfies, or two current versions of
    one cell or project; the message names caller, target and the available versions."""


class QueryError(FurtherError):
    """A QUERY parameter cannot be resolved: no rows (and not `allow_empty`), or no index."""
