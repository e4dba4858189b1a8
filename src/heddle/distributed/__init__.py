"""Running heddle across processes and machines.

:class:`RayRunner` runs agent calls on a Ray cluster
(``WorkflowExecutor(runner=RayRunner())``); Ray itself is imported only when
a runner is built, so this package imports without the ``heddle[ray]`` extra.
:class:`RedisCircuitBreakers` shares circuit breaker state between processes
(``WorkflowExecutor(circuit_breakers=RedisCircuitBreakers(url))``); it needs
the ``heddle[redis]`` extra only once built.
"""

from heddle.core.errors import AgentNotSerializable
from heddle.distributed.ray_runner import RayRunner
from heddle.distributed.redis_breakers import RedisCircuitBreakers

__all__ = ["AgentNotSerializable", "RayRunner", "RedisCircuitBreakers"]
