# astron-agent container image.
#   docker build -t astron-agent .
#   docker run --init -p 17870:17870 -e SERVICE_WORKERS=auto -v astron-data:/app/data astron-agent
# Settings come from the environment (-e, --env-file), which wins over the built-in
# config.env (config.env.example with SERVICE_GRACEFUL_TIMEOUT=7000, see below); or mount your
# own at /app/config.env.
#
# Behind a TLS-intercepting proxy, give the build your CA bundle as a build secret (never stored
# in a layer; without it nothing changes):
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t astron-agent .
#   podman build --format docker --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt ...
# (podman: --format docker keeps the HEALTHCHECK, which the OCI format drops.)

# ---- toolchain: what compiles the native modules, SQLite's and ours (build stages only) --------
FROM node:20-bookworm-slim AS toolchain
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
# node-gyp builds against the headers the Node image ships under /usr/local/include/node; it
# never downloads them.
ENV npm_config_nodedir=/usr/local
WORKDIR /app
COPY package.json package-lock.json ./

# ---- production dependencies: installed and compiled alone, cached until the lockfile changes --
FROM toolchain AS deps
# --ignore-scripts: the root package's `prepare` (the TypeScript build) needs dev dependencies;
# better-sqlite3's own install script (a prebuilt binary, or node-gyp) runs in `npm rebuild`.
# Not needed at run time, so not shipped: what the compiler left next to the module (objects, the
# SQLite sources and static library), and the packages' TypeScript sources, type declarations and
# source maps (about 40% of the production dependencies; Node 20 never loads them).
RUN --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle; fi \
 && npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && npm rebuild better-sqlite3 \
 && (cd node_modules/better-sqlite3 \
     && rm -rf deps src build/deps build/Release/obj.target build/Release/obj build/Release/.deps \
          build/Release/sqlite3.a build/Release/test_extension.node) \
 && find node_modules -type f \( -name '*.ts' -o -name '*.mts' -o -name '*.cts' -o -name '*.map' \) -delete \
 && rm -rf node_modules/@types /root/.npm

# ---- build: the type check and the bundle (tools/bundle.mjs), with the dev dependencies (not
# shipped). esbuild runs without its install script: its JS API finds the binary of the platform
# package (@esbuild/linux-x64) by itself.
FROM toolchain AS build
RUN --mount=type=secret,id=ca_bundle,required=false \
    if [ -s /run/secrets/ca_bundle ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca_bundle; fi \
 && npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json binding.gyp ./
COPY tools ./tools
COPY native ./native
COPY bin ./bin
COPY lib ./lib
# native/handoff.c: SERVICE_SCHEDULING=leastconn's connection handoff (the install script's job,
# skipped above with the other scripts). Checked: an image without it would fall back to IPC.
RUN npm run build:native && test -f build/Release/handoff.node && npm run build

# ---- runtime: the Node image, production dependencies and the compiled code; no compiler --------
FROM node:20-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/build/Release/handoff.node ./build/Release/handoff.node
COPY package.json ./
COPY config.env.example ./config.env
# docker and podman wait 10 s after SIGTERM before SIGKILL (`docker stop`, `podman stop`, compose).
# The whole drain must fit: a worker answers requests until SERVICE_GRACEFUL_TIMEOUT minus its
# cleanup margin (a quarter, here 1.75 s), and the primary's kill comes 2 s after it, so 7 s ends
# everything by 9 s. Set in the image's own config.env (not ENV), so that a mounted config.env
# or -e SERVICE_GRACEFUL_TIMEOUT still decides; raise it together with --stop-timeout.
RUN sed -i 's/^SERVICE_GRACEFUL_TIMEOUT=.*/SERVICE_GRACEFUL_TIMEOUT=7000/' config.env \
 && grep -qx 'SERVICE_GRACEFUL_TIMEOUT=7000' config.env \
 && mkdir -p /app/data && chown node:node /app/data
# /app/data holds the SQLite database, the pid file and the control socket (config.env: data/...):
# mount a volume there (-v astron-data:/app/data); the root filesystem can then be read-only
# (docker run --read-only). No VOLUME instruction: no anonymous volume piles up per container.
USER node
EXPOSE 17870
# Slim images have no curl: the CLI probes GET /health itself.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 CMD ["node", "dist/bin/agent.js", "health"]
# Exec form: the primary is PID 1 (or the child of --init) and receives SIGTERM directly.
ENTRYPOINT ["node", "dist/bin/agent.js"]
CMD ["start"]
