-- Readings stored per agent per minute, kept for two hours: what "readings in the last hour" of
-- GET /api/v1/agents adds up, without counting rows of the metrics table. Written by the insert
-- statement of src/store/metrics.ts, pruned by the partition maintenance.
CREATE TABLE "agent_activity" (
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT NOT NULL,
    "minute" TIMESTAMPTZ(3) NOT NULL,
    "readings" INTEGER NOT NULL,

    CONSTRAINT "agent_activity_pkey" PRIMARY KEY ("tenant_id", "agent_id", "minute")
);
