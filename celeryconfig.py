"""Celery settings (lowercase only). Broker URL and timeouts come from app.settings at bind time."""
from kombu import Queue

task_serializer = "json"
result_serializer = "json"
# Batches travel as zlib-compressed msgpack (app.broker.batch_message); every other task as
# JSON. Workers accept both, so a rolling deploy that upgrades workers before web processes
# keeps consuming what older web processes published.
accept_content = ["json", "msgpack"]
task_ignore_result = True
result_backend = None

# A task is acked after it finished; a worker killed mid-task gets its message redelivered.
task_acks_late = True
task_reject_on_worker_lost = True
task_acks_on_failure_or_timeout = True
# One message at a time for sessions/forward; the events worker raises this on its command
# line (--prefetch-multiplier) because celery-batches must hold many unacked messages.
worker_prefetch_multiplier = 1
worker_max_tasks_per_child = 10000
worker_cancel_long_running_tasks_on_connection_loss = True
worker_send_task_events = True
# No task-sent event from the web: it cost every accepted batch one more broker round trip
# and serialization on the hot path, and Flower already sees each task from the workers'
# events (received, started, succeeded; workers run with -E).
task_send_sent_event = False

task_default_queue = "events"
# The Redis broker's queues. On RabbitMQ app.broker.amqp_queues() replaces them with durable
# quorum queues on topic exchanges (same names and routing).
task_queues = (Queue("events"), Queue("sessions"), Queue("forward"), Queue("maintenance"))
task_routes = {
    "sessions.reconcile": {"queue": "maintenance"},  # first match wins: before "sessions.*"
    "forward.record": {"queue": "events"},  # a batches task: the worker that holds many messages
    "events.*": {"queue": "events"},
    "sessions.*": {"queue": "sessions"},
    "forward.*": {"queue": "forward"},
    "maintenance.*": {"queue": "maintenance"},
}
task_create_missing_queues = False

broker_connection_retry_on_startup = True
broker_connection_timeout = 2
broker_pool_limit = 10
# Publisher confirms on RabbitMQ: "published" means the broker has the message. Messages are
# persistent (Celery's default delivery mode; a quorum queue keeps every message on disk anyway).
broker_transport_options = {"confirm_publish": True}
task_default_delivery_mode = "persistent"
# Quorum queues (RabbitMQ): per-consumer prefetch instead of global QoS, and countdowns through
# Celery's native delayed delivery (celery_delayed_* quorum queues), so no worker holds one.
worker_detect_quorum_queues = True
broker_native_delayed_delivery_queue_type = "quorum"

timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
worker_redirect_stdouts = False
