# kgrec API / worker image. torch 2.13.0 from the package index brings its CUDA libraries,
# so the same image serves the CPU services and the GPU worker profile.

# The console's browser libraries, from npm at build time (never a CDN).
FROM node:20-slim AS console-assets
WORKDIR /assets
COPY app/console/assets/package.json app/console/assets/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /srv/kgrec
COPY requirements.txt pyproject.toml README.md ./
# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages
RUN pip install --no-cache-dir torch==2.13.0 \
 && pip install --no-cache-dir -r requirements.txt
COPY app ./app
COPY --from=console-assets /assets/node_modules/cytoscape/dist/cytoscape.min.js \
     /assets/node_modules/uplot/dist/uPlot.iife.min.js \
     /assets/node_modules/uplot/dist/uPlot.min.css ./app/console/static/vendor/
COPY graph_schema ./graph_schema
COPY kgrec ./kgrec
COPY workers ./workers
COPY migrations ./migrations
COPY kgrec_cli ./kgrec_cli
# every package pyproject.toml lists is copied above (tests/test_compose.py checks it); the CLI
# must start in the image
RUN pip install --no-cache-dir --no-deps -e . \
 && kgrec --help >/dev/null

ENV HF_HUB_OFFLINE=1 KGREC_DATA_DIR=/var/lib/kgrec
EXPOSE 8000
CMD ["kgrec", "serve", "--host", "0.0.0.0", "--port", "8000"]
