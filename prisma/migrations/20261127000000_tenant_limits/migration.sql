-- CreateTable
CREATE TABLE "tenant_limits" (
    "tenant_id" UUID NOT NULL,
    "agent_readings_per_second" INTEGER,
    "agent_readings_burst" INTEGER,
    "agent_bytes_per_second" INTEGER,
    "agent_bytes_burst" INTEGER,
    "tenant_readings_per_second" INTEGER,
    "tenant_readings_burst" INTEGER,
    "max_connections" INTEGER,
    "updated_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "tenant_limits_pkey" PRIMARY KEY ("tenant_id")
);

-- AddForeignKey
ALTER TABLE "tenant_limits" ADD CONSTRAINT "tenant_limits_tenant_id_fkey" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE CASCADE;
