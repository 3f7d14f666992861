"""The Dagster UI's GraphQL calls, for the tests that drive a running webserver (deployment.py).

What belongs here: the GraphQL documents the UI sends -- copied from Dagster's ui-core sources
in the webserver's bundle (``LaunchPipelineExecution`` in runs/RunUtils.tsx,
``LaunchPartitionBackfill`` in instance/backfill/BackfillUtils.tsx, ``LaunchAssetLoaderQuery``
in assets/LaunchAssetExecutionButton.tsx, ``ConfigPartitionForAssetJobQuery`` in
launchpad/ConfigFetch.tsx) -- with the variables the UI builds for them (:class:`UiClient`'s
launch methods), and the queries that read back what the UI shows: runs and their tags,
backfills, materialisations per partition, partition statuses and asset check executions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

LOCATION = "attendee_pipeline"
REPOSITORY = "__repository__"
#: The job the UI launches a selection of assets in when no named job is chosen.
ASSET_JOB = "__ASSET_JOB"
PARTITIONS_DEF = "events"


PYTHON_ERROR = "fragment PythonErrorFragment on PythonError { message className stack }"

#: ui-core/src/runs/RunUtils.tsx
LAUNCH_PIPELINE_EXECUTION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id runId pipelineName } }
    ... on PipelineNotFoundError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ...PythonErrorFragment
  }
}
""" + PYTHON_ERROR

#: ui-core/src/instance/backfill/BackfillUtils.tsx
LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
    ... on PipelineNotFoundError { message }
    ... on RunConflict { message }
    ... on ConflictingExecutionParamsError { message }
    ... on PresetNotFoundError { message }
    ... on RunConfigValidationInvalid { pipelineName errors { message path reason } }
    ...PythonErrorFragment
  }
}
""" + PYTHON_ERROR

#: ui-core/src/assets/LaunchAssetExecutionButton.tsx (the fields the launch uses)
LAUNCH_ASSET_LOADER = """
query LaunchAssetLoaderQuery($assetKeys: [AssetKeyInput!]!) {
  assetNodes(assetKeys: $assetKeys) {
    id
    jobNames
    isMaterializable
    assetKey { path }
    groupName
    assetChecksOrError { ... on AssetChecks { checks { name canExecuteIndividually jobNames } } }
    dependencyKeys { path }
    repository { name location { name } }
  }
  assetNodeAdditionalRequiredKeys(assetKeys: $assetKeys) { path }
}
"""

#: ui-core/src/launchpad/ConfigFetch.tsx: the tags and config of one partition of an asset job
CONFIG_PARTITION_FOR_ASSET_JOB = """
query ConfigPartitionForAssetJobQuery($repositoryName: String!, $repositoryLocationName: String!,
    $jobName: String!, $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName,
                           repositoryLocationName: $repositoryLocationName}) {
    ... on Pipeline {
      id
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        name
        runConfigOrError { ... on PartitionRunConfig { yaml } ...PythonErrorFragment }
        tagsOrError { ... on PartitionTags { results { key value } } ...PythonErrorFragment }
      }
    }
  }
}
""" + PYTHON_ERROR

ADD_DYNAMIC_PARTITION = """
mutation AddDynamicPartition($partitionsDefName: String!, $partitionKey: String!,
                             $repositorySelector: RepositorySelector!) {
  addDynamicPartition(partitionsDefName: $partitionsDefName, partitionKey: $partitionKey,
                      repositorySelector: $repositorySelector) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionKey }
    ... on DuplicateDynamicPartitionError { partitionName }
    ... on UnauthorizedError { message }
    ...PythonErrorFragment
  }
}
""" + PYTHON_ERROR

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } creationTime startTime endTime } }
    ...PythonErrorFragment
  }
}
""" + PYTHON_ERROR

RUN_LOGS = """
query RunLogs($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ExecutionStepFailureEvent { error { message cause { message } } }
        ... on RunFailureEvent { error { message } }
      }
    }
  }
}
"""

BACKFILL = """
query Backfill($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      id status isAssetBackfill numPartitions partitionNames
      error { message }
      assetBackfillData {
        assetBackfillStatuses {
          __typename
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsInProgress numPartitionsMaterialized
            numPartitionsFailed
          }
        }
      }
    }
    ...PythonErrorFragment
  }
}
""" + PYTHON_ERROR

MATERIALIZATIONS = """
query Materializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        partition runId timestamp
        metadataEntries {
          label
          ... on BoolMetadataEntry { boolValue }
          ... on IntMetadataEntry { intValue intRepr }
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""

PARTITION_STATUSES = """
query PartitionStatuses($assetKey: AssetKeyInput!) {
  assetNodeOrError(assetKey: $assetKey) {
    __typename
    ... on AssetNode {
      assetPartitionStatuses {
        __typename
        ... on DefaultPartitionStatuses {
          materializedPartitions failedPartitions unmaterializedPartitions materializingPartitions
        }
      }
    }
  }
}
"""

CHECK_EXECUTIONS = """
query CheckExecutions($assetKey: AssetKeyInput!, $checkName: String!) {
  assetCheckExecutions(assetKey: $assetKey, checkName: $checkName, limit: 100) {
    runId status partition
    evaluation { severity success partition description }
  }
}
"""


def _key(name: str) -> dict[str, list[str]]:
    return {"path": [name]}


def _metadata(entries: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for entry in entries:
        for name in ("boolValue", "intValue", "floatValue", "text", "jsonString"):
            if name in entry:
                values[entry["label"]] = entry[name]
                break
        else:
            values[entry["label"]] = None
        if entry.get("intValue") is None and entry.get("intRepr") is not None:
            values[entry["label"]] = int(entry["intRepr"])
    return values


@dataclass
class Launch:
    """What a launch mutation answered: ``typename`` (``LaunchRunSuccess``,
    ``InvalidSubsetError``, ...), the run id or backfill id, the message of an error."""

    typename: str
    run_id: str = ""
    backfill_id: str = ""
    message: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


class UiClient:
    """The Dagster UI's GraphQL calls against ``url`` (the webserver)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/graphql"
        self.session = requests.Session()

    def query(self, document: str, **variables: Any) -> dict[str, Any]:
        response = self.session.post(self.url, json={"query": document, "variables": variables}, timeout=60)
        body = response.json()
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    # ----------------------------------------------------------------- launching, as the UI does

    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}

    def add_partition(self, key: str) -> None:
        """The UI's "Add partition" of the ``events`` dynamic partitions."""
        result = self.query(ADD_DYNAMIC_PARTITION, partitionsDefName=PARTITIONS_DEF, partitionKey=key,
                            repositorySelector=self.repository_selector())["addDynamicPartition"]
        assert result["__typename"] in {"AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"}, result

    def asset_loader(self, assets: list[str]) -> dict[str, Any]:
        """``LaunchAssetLoaderQuery``: the nodes of ``assets`` and the keys the UI's dialog adds."""
        return self.query(LAUNCH_ASSET_LOADER, assetKeys=[_key(a) for a in assets])

    def with_required(self, assets: list[str]) -> list[str]:
        """``assets`` plus what the UI's "additional required keys" dialog adds on confirm."""
        extra = ["/".join(k["path"]) for k in self.asset_loader(assets)["assetNodeAdditionalRequiredKeys"]]
        return [*assets, *[a for a in extra if a not in assets]]

    def check_selection(self, assets: list[str], job: str) -> list[dict[str, Any]]:
        """The UI's ``getAssetCheckHandleInputs``: every check of the selected assets in ``job``."""
        handles = []
        for node in self.asset_loader(assets)["assetNodes"]:
            for check in (node.get("assetChecksOrError") or {}).get("checks", []):
                if not check["jobNames"] or job in check["jobNames"]:
                    handles.append({"name": check["name"], "assetKey": {"path": node["assetKey"]["path"]}})
        return handles

    def partition_tags(self, job: str, partition: str, assets: list[str]) -> tuple[list[dict[str, str]], str]:
        """``ConfigPartitionForAssetJobQuery``: the tags and run config YAML the UI launches a
        partition of an asset job with."""
        data = self.query(CONFIG_PARTITION_FOR_ASSET_JOB, repositoryName=REPOSITORY, repositoryLocationName=LOCATION,
                          jobName=job, partitionName=partition, assetKeys=[_key(a) for a in assets])
        part = data["pipelineOrError"]["partition"]
        tags = [{"key": t["key"], "value": t["value"]} for t in part["tagsOrError"]["results"]]
        return tags, part["runConfigOrError"].get("yaml") or "{}"

    def materialize(self, assets: list[str], partition: str, job: str = ASSET_JOB,
                    tags: Mapping[str, str] | None = None, with_checks: bool = True) -> Launch:
        """The UI's *Materialize* of ``assets`` for one partition (LaunchAssetChoosePartitionsDialog's
        single run): the partition's tags, the dialog's tags, ``dagster/from_ui``, the selected
        assets and their checks, in ``job`` (the asset job unless a named job is chosen)."""
        part_tags, config_yaml = self.partition_tags(job, partition, assets)
        all_tags = [*part_tags, *({"key": k, "value": v} for k, v in (tags or {}).items())]
        all_tags = [t for t in all_tags if t["key"] != "dagster/from_ui"] + [{"key": "dagster/from_ui", "value": "true"}]
        params = {
            "mode": "default",
            "executionMetadata": {"tags": all_tags},
            "runConfigData": config_yaml,
            "selector": {
                **self.repository_selector(),
                "pipelineName": job,
                "assetSelection": [_key(a) for a in assets],
                "assetCheckSelection": self.check_selection(assets, job) if with_checks else [],
            },
        }
        return self._launch_run(params)

    def launch_job(self, job: str, partition: str, tags: Mapping[str, str] | None = None) -> Launch:
        """The job launchpad's *Launch run* of one partition of a named job (no asset selection)."""
        all_tags = [{"key": "dagster/partition", "value": partition}, {"key": "dagster/from_ui", "value": "true"},
                    *({"key": k, "value": v} for k, v in (tags or {}).items())]
        params = {
            "mode": "default",
            "executionMetadata": {"tags": all_tags},
            "runConfigData": "{}",
            "selector": {**self.repository_selector(), "pipelineName": job},
        }
        return self._launch_run(params)

    def _launch_run(self, params: dict[str, Any]) -> Launch:
        result = self.query(LAUNCH_PIPELINE_EXECUTION, executionParams=params)["launchPipelineExecution"]
        run = result.get("run") or {}
        message = result.get("message") or "; ".join(e["message"] for e in result.get("errors", []))
        return Launch(result["__typename"], run_id=run.get("runId", ""), message=message, raw=result)

    def asset_backfill(self, assets: list[str], partitions: list[str]) -> Launch:
        """The UI's *Launch backfill* of ``assets`` over ``partitions`` (a pure asset backfill)."""
        params = {
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
            "assetSelection": [_key(a) for a in assets],
            "partitionNames": partitions,
            "fromFailure": False,
        }
        return self._launch_backfill(params)

    def job_backfill(self, job: str, partitions: list[str]) -> Launch:
        """The job's partitions page *Launch backfill* (BackfillSelector) over ``partitions``."""
        params = {
            "selector": {
                "partitionSetName": f"{job}_partition_set",
                "repositorySelector": self.repository_selector(),
            },
            "partitionNames": partitions,
            "fromFailure": False,
            "tags": [{"key": "dagster/from_ui", "value": "true"}],
        }
        return self._launch_backfill(params)

    def _launch_backfill(self, params: dict[str, Any]) -> Launch:
        result = self.query(LAUNCH_PARTITION_BACKFILL, backfillParams=params)["launchPartitionBackfill"]
        return Launch(result["__typename"], backfill_id=result.get("backfillId", ""),
                      message=result.get("message", ""), raw=result)

    # ----------------------------------------------------------------- reading back

    def runs(self, tags: Mapping[str, str] | None = None, run_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Runs (newest first) with every tag of ``tags`` / with these ids; each with ``tags``
        as a dict."""
        flt: dict[str, Any] = {}
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        if run_ids:
            flt["runIds"] = run_ids
        result = self.query(RUNS, filter=flt)["runsOrError"]
        assert result["__typename"] == "Runs", result
        return [{**r, "tags": {t["key"]: t["value"] for t in r["tags"]}} for r in result["results"]]

    def run(self, run_id: str) -> dict[str, Any]:
        found = self.runs(run_ids=[run_id])
        assert found, f"no run {run_id}"
        return found[0]

    def run_messages(self, run_id: str) -> list[str]:
        """The run's log messages and step failure errors, in order."""
        result = self.query(RUN_LOGS, runId=run_id)["logsForRun"]
        texts = []
        for event in result.get("events", []):
            if event.get("message"):
                texts.append(event["message"])
            error = event.get("error")
            while error:
                texts.append(error["message"])
                error = error.get("cause")
        return texts

    def backfill(self, backfill_id: str) -> dict[str, Any]:
        result = self.query(BACKFILL, backfillId=backfill_id)["partitionBackfillOrError"]
        assert result["__typename"] == "PartitionBackfill", result
        return result

    def backfill_runs(self, backfill_id: str) -> list[dict[str, Any]]:
        return self.runs(tags={"dagster/backfill": backfill_id})

    def materializations(self, asset: str, partition: str) -> list[dict[str, Any]]:
        """The asset's materialisations of ``partition`` (newest first), metadata as a dict."""
        result = self.query(MATERIALIZATIONS, assetKey=_key(asset), partitions=[partition])["assetOrError"]
        if result["__typename"] != "Asset":
            return []
        return [{**m, "metadata": _metadata(m["metadataEntries"])} for m in result["assetMaterializations"]]

    def partition_statuses(self, asset: str) -> dict[str, list[str]]:
        """What the UI's partition bar shows for ``asset``: materialized / failed / ... partitions."""
        node = self.query(PARTITION_STATUSES, assetKey=_key(asset))["assetNodeOrError"]
        return node["assetPartitionStatuses"]

    def check_executions(self, asset: str, check: str) -> list[dict[str, Any]]:
        return self.query(CHECK_EXECUTIONS, assetKey=_key(asset), checkName=check)["assetCheckExecutions"]
