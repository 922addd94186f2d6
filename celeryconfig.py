"""Celery settings (lowercase only). Broker URL and timeouts come from app.settings when the app
is configured (app.broker.configure); queue and task names from app.names."""
from kombu import Queue

from app.names import ROUTES
from app.names import Queue as QueueName

task_serializer = "json"
result_serializer = "json"
# Batches travel as zlib-compressed msgpack (app.broker.batch_message); a batch msgpack cannot
# encode, and every other task, as JSON.
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

task_default_queue = QueueName.EVENTS.value
# The Redis broker's queues. On RabbitMQ app.broker.amqp_queues() replaces them with durable
# quorum queues on topic exchanges (same names and routing).
task_queues = tuple(Queue(q.value) for q in QueueName)
task_routes = {task.value: {"queue": queue.value} for task, queue in ROUTES.items()}
task_create_missing_queues = False

broker_connection_retry_on_startup = True
broker_connection_timeout = 2
broker_pool_limit = 10
# Messages are persistent (Celery's default delivery mode; a quorum queue keeps every message on
# disk anyway). The transport options (publisher confirms on RabbitMQ, the visibility timeout on
# Redis) follow the settings: app.broker.transport_options.
task_default_delivery_mode = "persistent"
# Quorum queues (RabbitMQ): per-consumer prefetch instead of global QoS, and countdowns through
# Celery's native delayed delivery (celery_delayed_* quorum queues), so no worker holds one.
worker_detect_quorum_queues = True
broker_native_delayed_delivery_queue_type = "quorum"

timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
worker_redirect_stdouts = False
