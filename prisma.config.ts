import { defineConfig } from "prisma/config";

// DATABASE_URL is optional: `prisma generate` must run on a machine with no database.
export default defineConfig({
  schema: "prisma/schema.prisma",
  migrations: { path: "prisma/migrations" },
  datasource: { url: process.env.DATABASE_URL ?? "postgresql://localhost:5432/edge_ingest" },
});
