"""Running heddle across processes and machines.

:class:`RayRunner` runs agent calls on a Ray cluster
(``WorkflowExecutor(runner=RayRunner())``); Ray itself is imported only when
a runner is built, so this package imports without the ``heddle[ray]`` extra.
"""

from heddle.distributed.ray_runner import AgentNotSerializable, RayRunner

__all__ = ["AgentNotSerializable", "RayRunner"]
