"""The dense network: the interface users write against (``api``), loading a configured network
(``load``), the flat parameter vector (``layout``), the jitted JAX step (``step``), the servers'
dense optimizer (``optimizer``) and the zoo (``zoo/``).

Only ``step``, ``load.build`` and the networks import JAX. XLA is limited to one thread per
process here, before JAX starts (ranks share the machine's cores; more threads only fight):
``XLA_FLAGS`` gets ``--xla_cpu_multi_thread_eigen=false`` unless it already sets it.
"""
import os

_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false"
if "xla_cpu_multi_thread_eigen" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_ONE_THREAD}".strip()

import warnings

# JAX warns at every os.fork() once it is imported. streamtrain only forks through subprocess
# (fork + exec, nothing of this process runs in the child: mpiexec, Airflow), where the warning is
# noise on stderr that a one-line error report must not carry.
warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
