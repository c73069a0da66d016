# The Gradience Space as a Docker Space (space/README.md holds its front matter; see docs/deploy.md).
# One image: the Hub bot (`gradience bot serve`, docs/bot.md) and the crawl scheduler
# (`python -m bot.scheduler`) run from it with another CMD. No torch: the core never needs it,
# and neither the space nor the bot extra pulls it.
# The `bench` stage is the image HF Jobs run `gradience bench --on hf-jobs` in (docs/bench.md):
# the project and the bench extra (torch, peft, transformers; PyPI's Linux torch wheels carry
# CUDA). Build it with `docker build --target bench`; a Docker Space builds the last stage only.
FROM python:3.11-slim AS bench

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/home/user

RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app
COPY --chown=user:user pyproject.toml README.md ./
COPY --chown=user:user gradience ./gradience
# hadolint ignore=DL3013
RUN python -m pip install --no-cache-dir ".[bench]"
USER 1000
CMD ["python", "-m", "gradience.bench.remote"]

# The Space (the last stage, so a Docker Space builds it).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860 \
    HOME=/home/user

# Spaces run the container as uid 1000.
RUN useradd --create-home --uid 1000 user
WORKDIR /home/user/app

COPY --chown=user:user pyproject.toml README.md ./
COPY --chown=user:user gradience ./gradience
# The versions are the ranges in pyproject.toml's space extra (gradio 6.x); the image is rebuilt
# on every push, like the Space itself.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[space,bot]"

COPY --chown=user:user space ./space
COPY --chown=user:user bot ./bot
COPY --chown=user:user examples ./examples

USER 1000
EXPOSE 7860
CMD ["python", "space/app.py"]
