"""tasker: run work concurrently on long-lived, expensive resources.

Each worker owns one resource (a connection, a client, a model) for its whole life;
the manager queues tasks (priority and main), runs urgent ones at once on a pooled
resource, replaces sick workers and retries, scales workers with the load, measures
everything, and shuts down without leaving a caller hanging.

Example:
    >>> import tasker
    >>> with tasker.TaskManager(open_conn, on_destroy=close_conn, workers=4) as manager:
    ...     handle = manager.submit(lambda conn: conn.execute("select 1"))
    ...     print(handle.result())
"""

from tasker._compose import Dispatcher as Dispatcher
from tasker._config import ConfigError as ConfigError
from tasker._config import ServiceConfig as ServiceConfig
from tasker._config import parse_duration as parse_duration
from tasker._context import TaskContext as TaskContext
from tasker._context import current_task as current_task
from tasker._errors import ManagerClosed as ManagerClosed
from tasker._errors import QueueFull as QueueFull
from tasker._errors import ResourceCreationError as ResourceCreationError
from tasker._errors import RetriesExhausted as RetriesExhausted
from tasker._errors import TaskerError as TaskerError
from tasker._errors import TaskNotFound as TaskNotFound
from tasker._errors import TaskTimeout as TaskTimeout
from tasker._handle import TaskHandle as TaskHandle
from tasker._hooks import Hook as Hook
from tasker._hooks import Work as Work
from tasker._manager import Logger as Logger
from tasker._manager import Stats as Stats
from tasker._manager import TaskManager as TaskManager
from tasker._metrics import DefaultCollector as DefaultCollector
from tasker._metrics import Metrics as Metrics
from tasker._metrics import MetricsCollector as MetricsCollector
from tasker._metrics import NullCollector as NullCollector
from tasker._metrics import TaskTimestamps as TaskTimestamps
from tasker._modules import GeneratorModule as GeneratorModule
from tasker._modules import ManagerModule as ManagerModule
from tasker._modules import MetricsModule as MetricsModule
from tasker._retry import RetryPolicy as RetryPolicy
from tasker._retry import RetryStrategy as RetryStrategy
from tasker._scaling import DefaultScalingPolicy as DefaultScalingPolicy
from tasker._scaling import ScalingDecision as ScalingDecision
from tasker._scaling import ScalingPolicy as ScalingPolicy
from tasker._scaling import ScalingSample as ScalingSample
from tasker._schedule import Schedule as Schedule
from tasker._service import FiniteModule as FiniteModule
from tasker._service import Module as Module
from tasker._service import ModuleError as ModuleError
from tasker._service import ServiceRunner as ServiceRunner
from tasker._service import StopReport as StopReport
from tasker._state import TaskInfo as TaskInfo
from tasker._state import TaskState as TaskState

__version__ = "0.1.0.dev0"

# Grouped by concept, not sorted (hence the noqa): the groups are the documentation.
__all__ = [  # noqa: RUF022
    # the manager and its tasks
    "TaskManager",
    "TaskHandle",
    "TaskContext",
    "current_task",
    "Stats",
    "Logger",
    # task lifecycle
    "TaskState",
    "TaskInfo",
    "RetryPolicy",
    "RetryStrategy",
    "Schedule",
    # composition
    "Work",
    "Hook",
    "Dispatcher",
    # metrics
    "Metrics",
    "MetricsCollector",
    "DefaultCollector",
    "NullCollector",
    "TaskTimestamps",
    # scaling
    "ScalingPolicy",
    "ScalingSample",
    "ScalingDecision",
    "DefaultScalingPolicy",
    # services: modules, the runner, configuration
    "Module",
    "FiniteModule",
    "ServiceRunner",
    "StopReport",
    "ManagerModule",
    "GeneratorModule",
    "MetricsModule",
    "ServiceConfig",
    "parse_duration",
    # errors
    "TaskerError",
    "ManagerClosed",
    "QueueFull",
    "ResourceCreationError",
    "RetriesExhausted",
    "TaskTimeout",
    "TaskNotFound",
    "ModuleError",
    "ConfigError",
]
