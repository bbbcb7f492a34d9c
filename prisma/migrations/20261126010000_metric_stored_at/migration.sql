-- AlterTable: when the row was committed (its transaction's time), for publish-to-row latency.
ALTER TABLE "metrics" ADD COLUMN "stored_at" TIMESTAMPTZ(3) NOT NULL DEFAULT CURRENT_TIMESTAMP;
