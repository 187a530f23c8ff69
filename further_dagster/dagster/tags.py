"""Every `further/*` run tag, op tag and metadata key, and the `dagster/*` tags we read.

One place, as Dagster's own `_core/storage/tags.py`: a tag spelled in two modules drifts.
Run tags are instructions (a run's mode, freshness, where its Slurm jobs are); metadata keys
describe what a materialization or observation recorded.
"""

from __future__ import annotations

from further_dagster.settings import redact_url

# --- run tags a user (or the sensor) sets -------------------------------------------------
MODE_TAG = "further/mode"  # the run's mode ceiling: INLINE, LOCAL, LOCAL_PROCESSES, DASK, SLURM
FRESHNESS_TAG = "further/freshness"  # freshness overrides of resource cells for the run
SLURM_TAG = "further/slurm"  # a SlurmSpec (JSON) for the run worker's job, above the launcher

# --- run tags the release sensor writes ----------------------------------------------------
TRIGGER_TAG = "further/trigger"
RELEASES_TAG = "further/releases"
PARTITIONS_TAG = "further/partitions"

# --- run tags the Slurm launcher and step handler write ------------------------------------
JOB_ID_TAG = "further/slurm_job_id"  # the run worker's Slurm job
STDOUT_TAG = "further/slurm_stdout"
STDERR_TAG = "further/slurm_stderr"
FOLDER_TAG = "further/slurm_folder"
STEP_TAG_PREFIX = "further/slurm_step/"  # + step key: a step's job id, or local:<pid>@<host>
ARRAY_TAG_PREFIX = "further/slurm_array/"  # + step key: the job arrays a step submitted
ROUTE_TAG_PREFIX = "further/slurm_route/"  # + step key: "job" or "array", set before launch
LOCAL_PREFIX = "local:"

# --- Dagster's own run tags that we read ----------------------------------------------------
PARTITION_TAG = "dagster/partition"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"

# --- op tags and definition metadata of cell assets -----------------------------------------
CELL_TAG = "further/cell"  # "project.cell"
KIND = "further"  # the asset kind shown in the UI

# --- metadata keys of materializations, observations and engine events ---------------------
LOGIC_KEY = "further/logic_key"
INDEX = "further/index"  # the SQL fetching the instance's row of the SQL index
INDEX_URL = "further/index_url"  # which index (its URL without password)
CACHE = "further/cache"
SPECS = "further/specs"
ARTIFACT_PATH = "further/artifact_path"
MAKE_SECONDS = "further/make_seconds"
STEP_SECONDS = "further/step_seconds"
RELEASES = "further/releases"
INCREMENTS = "further/increments"  # the increment an incrementing cell's result is
INIT_LABEL_TAG = "further/init_label"  # run tag: project_inits labels ("fast,detailed")
LABELS = "further/labels"  # project_inits labels a materialization was resolved under
RUNTIME_CALLS = "further/runtime_calls"  # DYN/STUB/RAND children a step's instances called
RUNTIME_CALLER = "further/runtime_caller"  # the instance whose make() called this child
STEP_INSTANCES = "further/step_instances"  # instances a multi-partition step covered
STEP_HITS = "further/step_hits"  # of them, already stored
SKIPPED_STEP = "further/skipped_step"
CHECKED_BY_EXECUTOR = "further/checked_by_executor"  # a check evaluated without its step
COMPUTED_BY_STEP = "further/computed_by_step"  # an upstream instance computed in another step
TRACEBACK = "further/traceback"
CACHED_STEPS = "further/cached_steps"
CACHED_ASSETS = "further/cached_assets"
STEPS_TO_RUN = "further/steps_to_run"
DECIDE_SECONDS = "further/decide_seconds"
WAVE_INSTANCES = "further/wave_instances"  # missing instances a run sent to the engine
LOGIC_VERSION = "further/logic_version"
API_VERSION = "further/api_version"
CONTRIBUTIONS = "further/contributions"
SPEC_DEFAULTS = "further/spec_defaults"
RESOURCE = "further/resource"
FRESHNESS = "further/freshness"
STORED = "further/stored"
HISTORY = "further/history"


def index_link(index_url: str | None, key: str) -> dict[str, str]:
    """The metadata linking a materialization to the instance's row of the SQL index (none
    when the store keeps no index): `further/index`, the SQL fetching that row (for
    `session.query`), and `further/index_url`, which index (without its password)."""
    if index_url is None:
        return {}
    return {INDEX: f"SELECT * FROM instances WHERE key = '{key}'", INDEX_URL: redact_url(index_url)}
