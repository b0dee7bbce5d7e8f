# astron-agent container image.
#   docker build -t astron-agent .
#   docker run --init -p 17870:17870 -e SERVICE_WORKERS=auto astron-agent
# Settings come from the environment (-e, --env-file), which wins over the built-in
# config.env (a copy of config.env.example); or mount your own at /app/config.env.

# ---- build: compile TypeScript and the native SQLite module ---------------------------------
FROM node:20-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY bin ./bin
COPY lib ./lib
# npm ci runs `prepare` (the TypeScript build) and compiles native modules; then drop dev deps.
RUN npm ci && npm prune --omit=dev && npm cache clean --force

# ---- runtime: slim image of the Node major CI tests, production dependencies only -----------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY config.env.example ./config.env
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 17870
# Slim images have no curl: the CLI probes GET /health itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["node", "dist/bin/agent.js", "health"]
# Exec form: the primary is PID 1 (or the child of --init) and receives SIGTERM directly.
ENTRYPOINT ["node", "dist/bin/agent.js"]
CMD ["start"]
