# Stoplist: API + SMTP sink in one slim, non-root image. Configure with STOPLIST_* variables.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY app ./app
COPY dsn ./dsn
COPY arf ./arf
COPY classifiers ./classifiers
RUN python -m venv /opt/stoplist && /opt/stoplist/bin/pip install --quiet -c constraints.txt .

FROM python:3.11-slim
ENV PATH=/opt/stoplist/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    STOPLIST_HTTP_HOST=0.0.0.0 \
    STOPLIST_SMTP_HOST=0.0.0.0 \
    STOPLIST_DATABASE_URL=sqlite+aiosqlite:////var/lib/stoplist/stoplist.db
RUN useradd --system --uid 10001 --home-dir /var/lib/stoplist --create-home stoplist
COPY --from=build /opt/stoplist /opt/stoplist
USER stoplist
WORKDIR /var/lib/stoplist
EXPOSE 8025 2525
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os,urllib.request;h=os.environ.get('STOPLIST_HTTP_HOST') or '127.0.0.1';h={'0.0.0.0':'127.0.0.1','::':'::1'}.get(h,h);h='['+h+']' if ':' in h else h;urllib.request.urlopen('http://%s:%s/healthz' % (h,os.environ.get('STOPLIST_HTTP_PORT','8025')),timeout=2)"
CMD ["stoplist", "serve"]
