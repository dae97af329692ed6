# mana-ai: the resident Bun process, installed and started exactly as the README says (npm ci, npm start).
# Node 20 image, not oven/bun: the project is locked by package-lock.json (there is no bun.lock, so
# `bun install --frozen-lockfile` would resolve a different tree than CI tested), and the official
# Bun image has no npm. Bun itself comes from the `bun` npm package (its postinstall links the
# glibc binary, hence Debian rather than Alpine).
FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    PORT=3066 \
    LOG_FORMAT=json

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

COPY src ./src
COPY sql ./sql
COPY scripts ./scripts

# The bundle `npm start` runs (dist/main.js, scripts/bundle.ts), built now: /app is not writable by
# `node` at run time. `npm start` checks it first (every file it was built from, hashed as recorded in
# dist/inputs.json: all of them are in this image unchanged) and runs it; PGlite, left out of the
# bundle, resolves from /app/dist up to /app/node_modules, and sql/ and src/http/page/ are read from
# /app (src/appRoot.ts).
RUN node_modules/.bin/bun scripts/bundle.ts --force

# Embedded mode keeps PGlite's files and the generated service key in /app/.data: mount a volume
# there to keep them; with SYNC_DATABASE_URL set nothing is written.
RUN mkdir -p /app/.data && chown node:node /app/.data
VOLUME ["/app/.data"]

USER node
EXPOSE 3066

# Node is in the image anyway: no curl needed.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3066)+'/health').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]

# `npm start` is `bun scripts/bundle.ts && exec bun dist/main.js`: the check takes about 20 ms, the
# shell then execs Bun, so npm forwards SIGTERM to Bun, which drains (SHUTDOWN_GRACE_MS)
# and exits 0, and npm exits 0 with it. Give `docker stop` more than the grace: --time 40.
STOPSIGNAL SIGTERM
CMD ["npm", "start"]
