#!/bin/sh
# Prisma's CLI wants a native schema engine it would download; this machine cannot fetch it.
# `prisma generate` does not need it; anything that does fails loudly here instead of silently
# succeeding. Migrations are applied by `edge-ingest migrate` (src/store/migrate.ts).
echo "the native schema engine is not available offline; use 'npm run cli -- migrate'" >&2
exit 1
