"""A Soloist App view of a `celery.Celery` app: its tasks, its broker and its backend.

The view reads everything from the Celery app's configuration: `broker_url` and
`broker_transport_options` (global_keyprefix, visibility_timeout, priority_steps),
`result_backend` and `result_backend_transport_options`, `result_expires`,
`task_default_queue`, `accept_content`, `task_time_limit`, `task_soft_time_limit`.
Each registered Celery task (`@app.task`, `@shared_task`) becomes a Soloist task of
the same name, whose options carry what the Soloist worker enforces (queue, time
limits); everything else (bind, retries, autoretry_for, ignore_result, track_started)
stays Celery's, run by Celery's tracer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from celery.backends.redis import RedisBackend
from kombu.serialization import prepare_accept_content

from ..app import App
from ..errors import ConfigurationError
from ..message import Message
from ..task import Task, TaskOptions
from . import protocol
from .amqp import CeleryAMQPBroker, amqp_url
from .backend import DeferringRedisBackend
from .broker import broker_url
from .control import AMQPPidbox, Pidbox
from .execution import CeleryTaskRunner
from .results import CeleryResults, results_url

_REDIS = ("redis", "rediss")
_AMQP = ("amqp", "pyamqp")


class CeleryApp(App):
    """A Soloist App whose tasks, broker and results are a Celery app's."""

    runner_factory = CeleryTaskRunner

    def __init__(self, celery: Any) -> None:
        self.celery = celery
        conf = celery.conf
        celery.loader.import_default_modules()  # `imports`/`include`, as Celery's worker
        celery.finalize(auto=True)
        celery.set_current()
        broker = str(conf.broker_url or "")
        scheme = urlsplit(broker).scheme
        if scheme not in (*_REDIS, *_AMQP):
            raise ConfigurationError(
                f"the Celery app's broker is {scheme or 'unset'}://: a Soloist worker runs "
                "Celery apps on Redis (redis://, rediss://) and RabbitMQ (amqp://)"
            )
        options = dict(conf.broker_transport_options or {})
        backend = str(conf.result_backend or "")
        if urlsplit(backend).scheme in _REDIS:
            backend_options = dict(conf.result_backend_transport_options or {})
        elif scheme in _REDIS:
            # Soloist records revocations and time limits in Celery's format somewhere;
            # with no Redis backend, on the broker's Redis.
            backend, backend_options = broker, options
        else:
            raise ConfigurationError(
                "on RabbitMQ, a Soloist worker needs the Celery app's result backend on "
                f"Redis (result_backend = redis://…), not {urlsplit(backend).scheme or 'unset'}"
            )
        expires = conf.result_expires
        seconds = expires.total_seconds() if hasattr(expires, "total_seconds") else expires
        #: The content types the app's workers accept (as kombu's MIME types).
        self.accept = prepare_accept_content(conf.accept_content or ("json",))
        if scheme in _REDIS:
            url = broker_url(broker, options)
            db = urlsplit(broker).path.strip("/") or "0"
            prefix = options.get("global_keyprefix", "")
            channel = f"{prefix}/{db}.{conf.control_exchange}.pidbox"
            pidbox: Pidbox | AMQPPidbox = Pidbox(broker, channel, prefix, self.accept)
        else:
            url = amqp_url(broker, conf)
            pidbox = AMQPPidbox(
                CeleryAMQPBroker(url).connection_params(),
                f"{conf.control_exchange}.pidbox",
                self.accept,
            )
        results = CeleryResults(results_url(backend, backend_options, seconds), pidbox)
        super().__init__(
            url,
            results,
            default_queue=conf.task_default_queue,
            result_ttl=float(seconds or 86400),
        )
        self._given_results = False  # ours to close
        #: The backend that leaves SUCCESS records to the worker, if the app's allows it.
        self.deferring = self._deferring_backend()
        for name, ctask in celery.tasks.items():
            if self.deferring is not None and ctask._backend is None:
                ctask.backend = self.deferring  # Celery's per-task backend setting
            self.tasks[name] = Task(self, ctask.run, self._options(name, ctask))

    @property
    def origin(self) -> object:
        return self.celery

    def send(self, message: Message, queue: str, *, delay: float = 0, priority: int = 0) -> None:
        """Publish with Celery's own producer (`soloist enqueue` on a Celery app), so the
        queue holds a Celery message like every other."""
        self.celery.send_task(
            message.task,
            message.args,
            message.kwargs,
            task_id=message.id,
            queue=queue,
            countdown=delay or None,
            priority=priority,
        )

    def send_many(self, items: Sequence[tuple[Message, str, float, int]]) -> None:
        for message, queue, delay, priority in items:
            self.send(message, queue, delay=delay, priority=priority)

    def decode(self, body: bytes) -> Message:
        """A Celery message back as a task call; raises DecodeError."""
        call = protocol.decode(body, self.accept)
        return Message(call.task, call.args, call.kwargs, call.id)

    def _deferring_backend(self) -> DeferringRedisBackend | None:
        """A DeferringRedisBackend in place of the app's plain Redis backend with JSON
        results (the format `CeleryResults.put_many` writes); None for any other."""
        conf = self.celery.conf
        if type(self.celery.backend) is not RedisBackend or conf.result_serializer != "json":
            return None
        if conf.result_compression:
            return None
        return DeferringRedisBackend(app=self.celery, url=conf.result_backend)

    def _options(self, name: str, ctask: Any) -> TaskOptions:
        conf = self.celery.conf
        return TaskOptions(
            name=name,
            queue=getattr(ctask, "queue", None) or self.default_queue,
            max_retries=None,  # Celery's Task.retry() counts and refuses
            time_limit=ctask.time_limit or conf.task_time_limit,
            soft_time_limit=ctask.soft_time_limit or conf.task_soft_time_limit,
            ignore_result=bool(ctask.ignore_result),
        )
