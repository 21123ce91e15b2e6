# wasmhost container image.
#   build    npm ci, TypeScript → dist/, example plugins → plugins/dist/
#   deps     production dependencies only
#   runtime  Debian slim + the node binary + deps + dist; no npm, no compilers, non-root
# Build: docker build -t wasmhost .   (podman: add --format docker so HEALTHCHECK is kept)
ARG NODE_IMAGE=node:24-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# Behind a TLS-inspecting proxy, pass its CA bundle as the optional build secret `ca`.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi; \
    npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json openapi.yaml ./
COPY src ./src
COPY plugins ./plugins
COPY playground ./playground
# --if-missing: the Rust example plugins need Debian's rustc and cargo, which this stage does not carry.
# The playground's page and assets are bundled here: the image serves them as files, no Vite at run time.
RUN npm run build && node plugins/build.mjs --if-missing && npm run build:playground

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# No production dependency has an install script; type declarations, source maps and docs are
# dead weight at run time.
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi; \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && find node_modules -type f \( -name '*.d.ts' -o -name '*.d.mts' -o -name '*.d.cts' -o -name '*.map' \
      -o -name '*.md' \) -delete

FROM ${RUNTIME_IMAGE} AS runtime
COPY --from=build /usr/local/bin/node /usr/local/bin/node
RUN groupadd --gid 10001 wasmhost \
 && useradd --uid 10001 --gid wasmhost --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin wasmhost \
 && mkdir /data && chown 10001:10001 /data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /src/package.json /src/openapi.yaml ./
COPY --from=build /src/dist ./dist
COPY --from=build /src/plugins/dist ./plugins/dist
COPY --from=build /src/playground/dist ./playground/dist
LABEL org.opencontainers.image.title="wasmhost" \
      org.opencontainers.image.description="Stores Extism WebAssembly plugins and runs their functions over HTTP"
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    DATA_DIR=/data
VOLUME ["/data"]
EXPOSE 8080
USER 10001:10001
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM itself (src/main.ts shuts down gracefully).
ENTRYPOINT ["node", "dist/main.js"]
