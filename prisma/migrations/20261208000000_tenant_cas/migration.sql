-- CreateTable
CREATE TABLE "tenant_cas" (
    "fingerprint" TEXT NOT NULL,
    "tenant_id" UUID NOT NULL,
    "subject" TEXT NOT NULL,
    "pem" TEXT NOT NULL,
    "register_agents" BOOLEAN NOT NULL DEFAULT false,
    "not_after" TIMESTAMPTZ(3) NOT NULL,
    "created_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "removed_at" TIMESTAMPTZ(3),

    CONSTRAINT "tenant_cas_pkey" PRIMARY KEY ("fingerprint")
);

-- CreateIndex
CREATE INDEX "tenant_cas_subject_idx" ON "tenant_cas"("subject");

-- CreateIndex
CREATE INDEX "tenant_cas_tenant_id_idx" ON "tenant_cas"("tenant_id");

-- AddForeignKey
ALTER TABLE "tenant_cas" ADD CONSTRAINT "tenant_cas_tenant_id_fkey" FOREIGN KEY ("tenant_id") REFERENCES "tenants"("id") ON DELETE CASCADE ON UPDATE CASCADE;
