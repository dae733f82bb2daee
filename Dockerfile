# Production image: Node runs the TypeScript sources directly (type stripping), no build step. The Node
# version is exact and the one `npm start` and the tests run (the `node` devDependency;
# test/process/dockerfile.test.ts keeps them equal).
# Start path is the same as `npm start` (test/process/start-path.test.ts keeps them equal); NODE_ENV=production
# turns off every development default, so DATABASE_URL, the secrets and the VA Notify and AAL settings
# must be given.

FROM node:24.21.0-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

FROM node:24.21.0-bookworm-slim
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY sql ./sql
COPY src ./src
USER node
EXPOSE 3000
# Liveness, not readiness: a database blip makes every task unready at once, and a HEALTHCHECK on it
# would have the orchestrator replace them all together. /health/ready is for the load balancer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/health/live').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Run it under a restart policy (ECS service, Kubernetes Deployment, `--restart=on-failure`): after an
# uncaught error, such as the driver's after a database failover, the process exits 1 to be restarted.
# Heap caps: left to itself V8 sizes its heap from the host's memory (gigabytes) and lets garbage pile
# up under load; live data stays well under these, and the benchmarks run the service with them.
# No allocation-site pretenuring: once requests had lived long (a job run over HTTP, a stall), V8
# allocated every later request's objects straight in the old generation, so that each scavenge
# traced them and full collections came every second or two; those pauses were most of the callbacks'
# slowest answers (docs/benchmarks.md, History).
CMD ["node", "--max-old-space-size=160", "--max-semi-space-size=16", "--no-allocation-site-pretenuring", "src/server.ts"]
