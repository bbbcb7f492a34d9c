-- Hand-written (the schema cannot say it): metrics partitioned by time, dedupe over a window instead
-- of over all history, submission ids partitioned for pruning, and the latest value of every series.
-- Existing rows are moved into daily partitions; src/store/partitions.ts creates and drops the
-- partitions from then on (at the configured interval). Partition names carry their UTC start.

-- The old tables step aside, with the index and constraint names the new ones take.
ALTER TABLE "metrics" RENAME TO "metrics_unpartitioned";
ALTER TABLE "metrics_unpartitioned" DROP CONSTRAINT "metrics_pkey";
ALTER TABLE "metrics_unpartitioned" DROP CONSTRAINT "metrics_name_check";
DROP INDEX "metrics_tenant_id_dedupe_id_key";
DROP INDEX "metrics_tenant_id_ts_id_idx";
DROP INDEX "metrics_tenant_id_agent_id_name_ts_id_idx";
DROP INDEX "metrics_tenant_id_name_ts_id_idx";
ALTER TABLE "ingest_submissions" RENAME TO "ingest_submissions_unpartitioned";
ALTER TABLE "ingest_submissions_unpartitioned" DROP CONSTRAINT "ingest_submissions_pkey";
DROP INDEX "ingest_submissions_received_at_idx";

-- metrics: no primary key (a unique index on a partitioned table must hold the partition key, and
-- nothing looks a row up by id); ids still come from the old sequence, so they stay unique. The
-- fixed-width columns come first, so no alignment padding falls between the text ones.
CREATE TABLE "metrics" (
    "id" BIGINT NOT NULL DEFAULT nextval('metrics_id_seq'),
    "value" DOUBLE PRECISION NOT NULL,
    "ts" TIMESTAMPTZ(3) NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL,
    "stored_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "dedupe_id" TEXT,
    "tags" JSONB,
    CONSTRAINT "metrics_name_check" CHECK ("name" ~ '^[A-Za-z0-9_.:-]{1,128}$')
) PARTITION BY RANGE ("ts");
ALTER SEQUENCE "metrics_id_seq" OWNED BY "metrics"."id";
-- Every read of one series (the query API with agent_id and name, series, a dashboard's chart):
-- scanned backwards for newest first. Ascending, so a series' new readings go to the end of its range.
CREATE INDEX "metrics_series_idx" ON "metrics" ("tenant_id", "agent_id", "name", "ts");
-- Time ranges over many series (a tenant's or an agent's readings): rows arrive in about ts order,
-- so a block-range index of a few kilobytes per partition narrows a range to its blocks, where a
-- (tenant_id, ts) B-tree took 70 bytes a reading (interleaved tenants split its pages half full).
CREATE INDEX "metrics_ts_brin" ON "metrics" USING BRIN ("ts");

-- Who sent a dedupe_id when, for as long as the dedupe window: each partition has a unique index
-- on (tenant_id, dedupe_id), made with the partition (a partitioned table's own unique index would
-- have to hold seen_at).
CREATE TABLE "metric_dedupe" (
    "tenant_id" UUID NOT NULL,
    "dedupe_id" TEXT NOT NULL,
    "seen_at" TIMESTAMPTZ(3) NOT NULL
) PARTITION BY RANGE ("seen_at");

CREATE TABLE "ingest_submissions" (
    "id" UUID NOT NULL,
    "tenant_id" UUID NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL,
    CONSTRAINT "ingest_submissions_pkey" PRIMARY KEY ("id", "received_at")
) PARTITION BY RANGE ("received_at");

-- The last value of every series, kept by the insert: what `latest` and "last seen" read.
CREATE TABLE "metric_latest" (
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "value" DOUBLE PRECISION NOT NULL,
    "ts" TIMESTAMPTZ(3) NOT NULL,
    "tags" JSONB,
    "received_at" TIMESTAMPTZ(3) NOT NULL,
    CONSTRAINT "metric_latest_pkey" PRIMARY KEY ("tenant_id", "agent_id", "name")
);

-- Daily partitions for every day the old rows cover, and for today and the next two days.
DO $$
DECLARE
    first_day date;
    last_day date;
    day date;
    suffix text;
    from_ts timestamptz;
    to_ts timestamptz;
BEGIN
    SELECT least(
               coalesce((SELECT min("ts") FROM "metrics_unpartitioned"), now()),
               coalesce((SELECT min("received_at") FROM "ingest_submissions_unpartitioned"), now()),
               now() - interval '1 day'
           ) AT TIME ZONE 'UTC',
           greatest(coalesce((SELECT max("ts") FROM "metrics_unpartitioned"), now()), now()) AT TIME ZONE 'UTC'
      INTO first_day, last_day;
    FOR day IN SELECT generate_series(first_day, last_day + 2, interval '1 day')::date LOOP
        suffix := '_p' || to_char(day, 'YYYYMMDD') || '_00';
        from_ts := day::timestamp AT TIME ZONE 'UTC';
        to_ts := (day + 1)::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE %I PARTITION OF "metrics" FOR VALUES FROM (%L) TO (%L)', 'metrics' || suffix, from_ts, to_ts);
        EXECUTE format('CREATE TABLE %I PARTITION OF "ingest_submissions" FOR VALUES FROM (%L) TO (%L)', 'ingest_submissions' || suffix, from_ts, to_ts);
        IF day >= (now() AT TIME ZONE 'UTC')::date - 1 THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF "metric_dedupe" FOR VALUES FROM (%L) TO (%L)', 'metric_dedupe' || suffix, from_ts, to_ts);
            EXECUTE format('CREATE UNIQUE INDEX %I ON %I ("tenant_id", "dedupe_id")', 'metric_dedupe' || suffix || '_key', 'metric_dedupe' || suffix);
        END IF;
    END LOOP;
END $$;

INSERT INTO "metrics" ("id", "tenant_id", "agent_id", "name", "value", "ts", "dedupe_id", "tags", "received_at", "stored_at")
SELECT "id", "tenant_id", "agent_id", "name", "value", "ts", "dedupe_id", "tags", "received_at", "stored_at"
FROM "metrics_unpartitioned";

-- Readings received in the last day keep their dedupe (the default window); older ones were outside it.
INSERT INTO "metric_dedupe" ("tenant_id", "dedupe_id", "seen_at")
SELECT "tenant_id", "dedupe_id", min("received_at")
FROM "metrics_unpartitioned"
WHERE "dedupe_id" IS NOT NULL AND "received_at" >= now() - interval '1 day'
GROUP BY "tenant_id", "dedupe_id";

INSERT INTO "metric_latest" ("tenant_id", "agent_id", "name", "value", "ts", "tags", "received_at")
SELECT DISTINCT ON ("tenant_id", "agent_id", "name") "tenant_id", "agent_id", "name", "value", "ts", "tags",
       max("received_at") OVER (PARTITION BY "tenant_id", "agent_id", "name")
FROM "metrics_unpartitioned"
ORDER BY "tenant_id", "agent_id", "name", "ts" DESC, "id" DESC;

INSERT INTO "ingest_submissions" ("id", "tenant_id", "received_at")
SELECT "id", "tenant_id", "received_at" FROM "ingest_submissions_unpartitioned";

DROP TABLE "metrics_unpartitioned";
DROP TABLE "ingest_submissions_unpartitioned";
