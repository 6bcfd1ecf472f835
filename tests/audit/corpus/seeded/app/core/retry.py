"""Sync helpers that block: a connect-retry loop, a LangChain invoke, requests."""

import subprocess
import time

import requests


def _backoff(attempt):
    time.sleep(min(2**attempt, 30))


def connect_with_retry(connect, attempts=5):
    for attempt in range(attempts):
        try:
            return connect()
        except OSError:
            _backoff(attempt)
    raise RuntimeError("no connection")


def summarise_sync(chain, text):
    return chain.invoke({"text": text})


def fetch_profile(url):
    return requests.get(url, timeout=5).json()


def render_pdf(path):
    subprocess.run(["wkhtmltopdf", path, path + ".pdf"], check=True)


class VectorStore:
    def __init__(self, connect):
        self.conn = connect_with_retry(connect)

    @classmethod
    def open(cls, connect):
        return cls(connect)
