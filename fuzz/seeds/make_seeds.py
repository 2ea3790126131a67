#!/usr/bin/env python3
"""Seed inputs for the fuzz targets, from the repository's own realistic inputs.

Writes fuzz/seeds/out/<target>/ (not kept: `make fuzz` and the corpora in fuzz/corpus/ are what
count); run `cargo fuzz cmin <target> fuzz/corpus/<target> fuzz/seeds/out/<target>` or just
`cargo fuzz run <target> fuzz/corpus/<target> fuzz/seeds/out/<target>` to merge them in.
Needs PyYAML only for the spec seeds (apt-get install python3-yaml), else they are skipped."""

import hashlib
import json
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def write(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def upgrade_docs():
    """Every LangfuseUpgrade document in the repository's YAML."""
    for base in ["examples", "tests/cli/fixtures", "tests/chart/fixtures", "gitops"]:
        for dirpath, _, names in os.walk(os.path.join(ROOT, base)):
            for n in sorted(names):
                if not n.endswith((".yaml", ".yml")):
                    continue
                text = open(os.path.join(dirpath, n), encoding="utf-8").read()
                for doc in re.split(r"(?m)^---\s*$", text):
                    if re.search(r"(?m)^kind: LangfuseUpgrade\s*$", doc):
                        yield doc


def spec_seeds():
    try:
        import yaml
    except ImportError:
        print("no PyYAML: spec seeds are the raw documents only", file=sys.stderr)
        yaml = None
    for doc in upgrade_docs():
        write("spec", doc)
        if yaml is None:
            continue
        obj = yaml.safe_load(doc)
        # Versions and durations as YAML reads them unquoted would be numbers: keep them strings.
        write("spec", json.dumps(obj, default=str))
        spec = obj.get("spec") or {}
        write("spec", json.dumps(spec, default=str))
        write("spec", yaml.safe_dump(spec))
    if yaml is None:
        return
    base = yaml.safe_load(read("examples/minimal.yaml"))["spec"]
    variants = [
        ("strategy", {"drainPeriod": "90s", "retireSourceAfter": "1h30m", "rollbackAfter": "1.5m"}),
        ("strategy", {"drainPeriod": "0", "promotion": "Manual", "approved": True, "imageChanges": "User"}),
        ("migrations", {"stuckAfter": "10m", "remediation": False, "minBatchSize": 1}),
        ("target", {"version": "3.29.0", "finalVersion": "4.16.0", "acceptUnknownRelease": True}),
        ("target", {"version": "4.16.0", "extraEnv": [{"name": "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL", "value": "true"}]}),
        ("target", {"version": "3.29.0", "web": {"image": "registry:5000/langfuse/langfuse", "replicas": 3}, "worker": {"image": "langfuse/langfuse-worker", "replicas": 1}}),
        ("redis", {"host": "redis", "port": 6379, "authSecretRef": {"name": "redis", "key": "password"}, "tlsEnabled": True}),
        ("s3", {"bucket": "langfuse", "endpoint": "http://minio:9000", "forcePathStyle": True}),
        ("postgres", {"urlSecretRef": {"name": "pg", "key": "url"}}),
        ("preflight", {"skip": ["SourceVersion", "Backup", "HorizontalPodAutoscaler"]}),
        ("backup", {"acknowledged": True, "acknowledgedHops": ["4.16.0"]}),
        ("source", {"deployment": "prod-langfuse-web", "service": "prod-langfuse-web", "container": "langfuse-web", "worker": "prod-langfuse-worker"}),
    ]
    for key, value in variants:
        spec = json.loads(json.dumps(base))
        spec[key] = value
        write("spec", json.dumps(spec))
        write("spec", yaml.safe_dump({"apiVersion": "upgrades.lfu-operator.dev/v1alpha1", "kind": "LangfuseUpgrade",
                                      "metadata": {"name": "to-v3", "namespace": "langfuse"}, "spec": spec}))


def version_seeds():
    catalog = read("catalog/langfuse.yaml")
    write("version", catalog)
    versions = sorted(set(re.findall(r"\b\d+\.\d+\.\d+\b", catalog)))
    images = set()
    for base in ["tests/e2e", "examples", "tests/chart", "charts"]:
        for dirpath, _, names in os.walk(os.path.join(ROOT, base)):
            for n in names:
                if n.endswith((".yaml", ".yml")):
                    text = open(os.path.join(dirpath, n), encoding="utf-8", errors="replace").read()
                    images.update(m.strip().strip('"') for m in re.findall(r"image:\s*([^\s{][^\s]*)", text))
    images.update([
        "ghcr.io/langfuse/langfuse:2.95.9", "registry:5000/langfuse/langfuse:2.93.1@sha256:abc",
        "langfuse/langfuse@sha256:abc", "registry:5000/langfuse/langfuse", "ghcr.io/langfuse/langfuse:2",
        "langfuse/langfuse:latest", "langfuse/langfuse:v3.29.0", "langfuse/langfuse-worker:3.225.4",
    ])
    for v in versions:
        write("version", v)
    for i in images:
        write("version", i)
    pairs = [("2.95.9", "4.16.0"), ("3.100.0", "3.50.0"), ("4.16.0", "3.225.4"), ("3.29.0", "2.95.9"),
             ("3.225.4", "4.20.0"), ("2.91.0", "3.29.0"), ("3.225.4", "3.225.0"), ("4.2.0", "4.16.0"),
             ("ghcr.io/langfuse/langfuse:2.95.9", "3.29.0"), ("v2.95.9", "v3.225.4")]
    for a, b in pairs:
        write("version", f"{a}\n{b}\n")


TRACES = "20241024_1730_migrate_traces_from_pg_to_ch"
OBS = "20241024_1737_migrate_observations_from_pg_to_ch"
SCORES = "20241024_1738_migrate_scores_from_pg_to_ch"
COST = "20241024_1216_add_generations_cost_backfill"
NOW = 1800000000000


def row(name, script, state="{}", args="{}", finished="", failed="", reason="", locked="", worker="",
        oldest="", now=NOW, start="", gates=""):
    return "\n".join(str(x) for x in [name, script, state, args, finished, failed, reason, locked, worker,
                                        oldest, now, start, gates]) + "\n"


def migration_row_seeds():
    cursor = '{"maxDate": "2027-01-15T07:00:00.000Z"}'
    rows = [
        row(TRACES, "migrateTracesFromPostgresToClickhouse"),
        row(TRACES, "migrateTracesFromPostgresToClickhouse", cursor, '{"batchSize": 2500}', locked=NOW - 5000,
            worker="w1", oldest=NOW - 86400000 * 30, start=NOW - 3600000),
        row(OBS, "migrateObservationsFromPostgresToClickhouse",
            '{"maxDate_x": "2024-03-01T00:00:08.250", "maxDate": "1999-01-01T00:00:00Z"}',
            '{"batchSize": "1000", "stateSuffix": "_x"}', locked=NOW - 120000, worker="w0", oldest=NOW - 86400000),
        row(SCORES, "migrateScoresFromPostgresToClickhouse", cursor, "{}", failed=NOW, reason="boom", worker="w1"),
        row(SCORES, "migrateScoresFromPostgresToClickhouse", cursor, '{"batchSize": 5000}', failed=NOW,
            reason="Failed to convert rust String into napi string", worker="w1"),
        row(COST, "addGenerationsCostBackfill", finished=NOW),
        row(TRACES, "migrateTracesFromPostgresToClickhouse", '{}',
            '{"batchSize": 5000, "maxDate": "2024-11-04T11:16:00.123Z", "maxRowsToProcess": 1e9, "custom": [1, 2]}'),
        row("20260701_v4_step_1_create_root_spans_from_traces", "createRootSpansFromTraces", "{}",
            '{"envGate": "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"}'),
        row("20260701_v4_step_1_create_root_spans_from_traces", "createRootSpansFromTraces", "{}",
            '{"envGate": "LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"}', worker="w1",
            gates="LANGFUSE_BACKGROUND_MIGRATION_V4_ENABLE_HISTORIC_BACKFILL"),
        row(TRACES, "migrateTracesFromPostgresToClickhouse", '{"maxDate": "2027-01-15T07:00:00"}',
            '{"batchSize": 2.5e3}', locked=NOW - 1000, worker="w1", oldest=NOW - 7200000, start=NOW - 3600000),
        row(TRACES, "migrateTracesFromPostgresToClickhouse", '{"maxDate": 1736924400000}', '{"batchSize": null}'),
    ]
    for r in rows:
        write("migration_row", r)


if __name__ == "__main__":
    spec_seeds()
    version_seeds()
    migration_row_seeds()
    for t in sorted(os.listdir(OUT)):
        print(t, len(os.listdir(os.path.join(OUT, t))))
