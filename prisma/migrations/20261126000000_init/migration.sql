-- CreateEnum
CREATE TYPE "CredentialRole" AS ENUM ('agent', 'ingest', 'viewer');

-- CreateTable
CREATE TABLE "tenants" (
    "id" UUID NOT NULL,
    "name" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "tenants_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "agents" (
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "agents_pkey" PRIMARY KEY ("tenant_id","agent_id")
);

-- CreateTable
CREATE TABLE "credentials" (
    "username" TEXT NOT NULL,
    "role" "CredentialRole" NOT NULL,
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT,
    "secret_hash" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "revoked_at" TIMESTAMPTZ(3),

    CONSTRAINT "credentials_pkey" PRIMARY KEY ("username")
);

-- CreateTable
CREATE TABLE "metrics" (
    "id" BIGSERIAL NOT NULL,
    "tenant_id" UUID NOT NULL,
    "agent_id" TEXT NOT NULL,
    "name" TEXT NOT NULL,
    "value" DOUBLE PRECISION NOT NULL,
    "ts" TIMESTAMPTZ(3) NOT NULL,
    "dedupe_id" TEXT,
    "tags" JSONB,
    "received_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "metrics_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ingest_submissions" (
    "id" UUID NOT NULL,
    "tenant_id" UUID NOT NULL,
    "received_at" TIMESTAMPTZ(3) NOT NULL,

    CONSTRAINT "ingest_submissions_pkey" PRIMARY KEY ("id")
);

-- CreateIndex
CREATE INDEX "credentials_tenant_id_idx" ON "credentials"("tenant_id");

-- CreateIndex
CREATE UNIQUE INDEX "metrics_tenant_id_dedupe_id_key" ON "metrics"("tenant_id", "dedupe_id");

-- CreateIndex
CREATE INDEX "metrics_tenant_id_ts_id_idx" ON "metrics"("tenant_id", "ts" DESC, "id" DESC);

-- CreateIndex
CREATE INDEX "metrics_tenant_id_agent_id_name_ts_id_idx" ON "metrics"("tenant_id", "agent_id", "name", "ts" DESC, "id" DESC);

-- CreateIndex
CREATE INDEX "metrics_tenant_id_name_ts_id_idx" ON "metrics"("tenant_id", "name", "ts" DESC, "id" DESC);

-- CreateIndex
CREATE INDEX "ingest_submissions_received_at_idx" ON "ingest_submissions"("received_at");

-- Hand-written (the schema cannot say it): the metric grammar, enforced once more at the last gate.
ALTER TABLE "metrics" ADD CONSTRAINT "metrics_name_check" CHECK ("name" ~ '^[A-Za-z0-9_.:-]{1,128}$');

-- AddForeignKey
ALTER TABLE "agents" ADD CONSTRAINT "agents_tenant_id_fkey" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "credentials" ADD CONSTRAINT "credentials_tenant_id_fkey" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE CASCADE;

-- AddForeignKey
ALTER TABLE "credentials" ADD CONSTRAINT "credentials_tenant_id_agent_id_fkey" FOREIGN KEY ("tenant_id", "agent_id") REFERENCES "agents"("tenant_id", "agent_id") ON DELETE CASCADE ON UPDATE CASCADE;
