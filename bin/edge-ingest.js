#!/usr/bin/env node
// The sources are TypeScript run by tsx (the generated Prisma client imports .ts paths).
import { register } from "tsx/esm/api";

register();
await import("../src/main.ts");
